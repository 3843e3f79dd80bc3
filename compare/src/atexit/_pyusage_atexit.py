# pyusage atexit collector, the exit-time part: written by `pyusage atexit install` (edit the
# install, not this file) and imported by its sitecustomize.py only at interpreter exit, so that a
# start-up pays for nothing but the small sitecustomize. It lists the top-level packages in
# sys.modules and writes one record per package in pyusage's schema (`source = "atexit"`): to the
# pyusage daemon's socket when one listens, else as JSON lines under the spool directory. Every
# error is caught and counted, and the work stops at a time budget. Python 2.7 and 3.x, standard
# library only.
import os
import sys

# @CONFIG@ (replaced at install)
_CONFIG = {}

_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")
_CONTAINER_VARS = (
    ("SHIFTER_RUNTIME", "shifter"), ("SHIFTER_IMAGEREQUEST", "shifter"),
    ("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "apptainer"),
)
_BLAS = (("mkl_rt", "mkl"), ("libmkl", "mkl"), ("openblas", "openblas"), ("libblis", "blis"),
         ("flexiblas", "flexiblas"), ("libblas.so", "reference"))
_PY2 = sys.version_info[0] == 2
_text = unicode if _PY2 else str  # noqa: F821 (Python 2 only)
_ESCAPES = dict((i, u"\\u%04x" % i) for i in range(32))
_ESCAPES.update({ord(u'"'): u'\\"', ord(u"\\"): u"\\\\", 10: u"\\n", 9: u"\\t", 13: u"\\r"})
_SURROGATES = {}  # Python 2: U+D800-DFFF -> U+FFFD, built on first need
_INT = (int, type(2 ** 64))  # Python 2's long too
_I32, _U32 = 2 ** 31 - 1, 2 ** 32 - 1
_state = {"errors": [], "budget_exceeded": False}
_enc = None


def _j(v):
    """JSON text of a value (json is not imported at start-up in 3.11+: not imported here)."""
    if _enc is not None and v.__class__ is _text:
        out = _enc(v)
        if u"\\ud" not in out:
            return out
    if v is None:
        return u"null"
    if v is True:
        return u"true"
    if v is False:
        return u"false"
    if isinstance(v, _INT) and not isinstance(v, bool):
        return _text(int(v))
    if isinstance(v, list):
        return u"[" + u",".join(_j(x) for x in v) + u"]"
    if not isinstance(v, _text):
        v = v.decode("utf-8", "replace") if isinstance(v, bytes) else _text(v)
    if _enc is not None:
        out = _enc(v)
        if u"\\ud" not in out:
            return out
    return u'"' + _valid(v).translate(_ESCAPES) + u'"'


def _valid(v):
    """`v` without lone surrogates (undecodable bytes of a file name; Python 2 also decodes
    encoded surrogates to them), which are neither JSON nor UTF-8: U+FFFD instead."""
    if _PY2:
        if not _SURROGATES:
            _SURROGATES.update((c, 0xFFFD) for c in range(0xD800, 0xE000))
        return v.translate(_SURROGATES)
    try:
        v.encode("utf-8")
        return v
    except UnicodeEncodeError:
        pass
    try:  # the bytes surrogateescape stood for, each undecodable one as U+FFFD
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return v.encode("utf-8", "replace").decode("utf-8")


def rand_hex():
    r = os.urandom(16)
    return r.encode("hex") if _PY2 else r.hex()


def _micros_text(t):
    us = int(round(t * 1e6))
    g = __import__("time").gmtime(us // 1000000)
    return u"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (g[0], g[1], g[2], g[3], g[4], g[5], us % 1000000)


def _start_time():
    """Exec time from /proc: clock ticks since boot (10 ms) + the boot time (whole seconds), so
    within about a second of the kernel's exec time."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    ticks = int(fields[19])
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                btime = int(line.split()[1])
                break
        else:
            raise ValueError("no btime in /proc/stat")
    return btime + float(ticks) / os.sysconf("SC_CLK_TCK")


def _rank(env):
    for var in _RANK_VARS:
        v = env.get(var)
        if v is not None:
            try:
                r = int(v)
            except ValueError:
                return None
            return r if -_I32 - 1 <= r <= _I32 else None
    return None


def _nodes(env):
    try:
        n = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    except ValueError:
        return 1
    return n if 1 <= n <= _U32 else 1


def _job(env):
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = env["SLURM_ARRAY_JOB_ID"] + "_" + env["SLURM_ARRAY_TASK_ID"]
    return job


def _main():
    m = sys.modules.get("__main__")
    spec = getattr(m, "__spec__", None)
    name = getattr(spec, "name", None)
    if name:
        if name.endswith(".__main__"):
            name = name[: -len(".__main__")]
        return "-m " + name
    argv = getattr(sys, "argv", None) or [""]
    if argv[0] in ("-c", "-"):
        return argv[0]
    return argv[0] or None


def _container(env):
    """(in a container, runtime): another mount namespace than init's where /proc shows it
    (root), else what the runtime's variables say (the old tools' `is_shifter`)."""
    runtime = None
    for var, name in _CONTAINER_VARS:
        if env.get(var):
            runtime = name
            break
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt"), runtime
    except OSError:
        return runtime is not None, runtime


def _blas():
    try:
        with open("/proc/self/maps", "rb") as f:
            maps = f.read()
    except (IOError, OSError):
        return None
    for needle, name in _BLAS:
        if needle.encode() in maps:
            return name
    return None


def _attrs(mod):
    """A module's own attributes: never its module-level __getattr__ (a lazy loader could
    import at exit, and numpy's raises slowly for every name it lacks)."""
    try:
        return object.__getattribute__(mod, "__dict__")
    except Exception:
        return {}


def _where(attrs, name):
    """The module's file; <built-in> or <frozen> for one without (3.11+ gives frozen stdlib
    modules a __file__ they were not read from); '' for a namespace package; None for a module
    made at run time (Cython's `cython_runtime`, multiprocessing's `__mp_main__`), which is no
    package of anyone's."""
    spec = attrs.get("__spec__")
    if getattr(spec, "origin", None) == "frozen" or "Frozen" in type(attrs.get("__loader__")).__name__:
        return "<frozen>"
    if name in sys.builtin_module_names:
        return "<built-in>"
    f = attrs.get("__file__")
    if f and isinstance(f, (str, _text)):
        return f if f[:1] == "/" else os.path.abspath(f)
    if attrs.get("__path__") is not None:
        return ""
    return None


class _Places(object):
    """The interpreter's prefixes, PYTHONPATH and user site, looked up once per exit."""

    def __init__(self, pythonpath):
        self.prefix = sys.prefix
        self.base = getattr(sys, "base_prefix", getattr(sys, "real_prefix", sys.prefix))
        user_site = getattr(sys.modules.get("site"), "USER_SITE", None)
        self.user_site = user_site + "/" if user_site else None
        self.pythonpath = [p.rstrip("/") + "/" for p in pythonpath if p]
        self.conda = {}

    def is_conda(self, p):
        if p not in self.conda:
            self.conda[p] = os.path.isdir(os.path.join(p, "conda-meta"))
        return self.conda[p]

    def kind(self, path):
        """Where a file lives, cheaply; the daemon's resolver is the careful one."""
        if path in ("<built-in>", "<frozen>"):
            return "stdlib", None
        if not path:
            return "unknown", None
        prefix, base = self.prefix, self.base
        if "/site-packages/" in path or "/dist-packages/" in path:
            if self.user_site and path.startswith(self.user_site):
                return "user", os.path.dirname(self.user_site[:-1])
            if prefix != base and path.startswith(prefix + "/"):
                return "venv", prefix
            for p in (prefix, base):
                if path.startswith(p + "/"):
                    return ("conda" if self.is_conda(p) else "system"), p
            return "system", None
        for p in (base, prefix):
            if path.startswith(p + "/lib/python"):
                return "stdlib", None
        for p in self.pythonpath:
            if path.startswith(p):
                return "pythonpath", None
        return "unknown", None


def _packages(modules, deadline):
    only = _CONFIG.get("packages")
    out = {}
    n = 0
    for name, mod in modules:
        n += 1
        if n % 64 == 0 and __import__("time").time() > deadline:
            _state["budget_exceeded"] = True
            break
        if mod is None or not isinstance(name, (str, _text)) or not name or name in ("__main__", __name__):
            continue
        top = name.partition(".")[0]
        if only is not None and top not in only:
            continue
        attrs = _attrs(mod)
        entry = out.get(top)
        if entry is None:
            topattrs = _attrs(sys.modules.get(top) or mod)
            version = topattrs.get("__version__")
            if not isinstance(version, (str, _text)) or len(version) > 64:
                version = None
            where = _where(topattrs, top)
            if where is None:
                continue
            entry = out[top] = [where, version, 0]
        if attrs.get("__file__"):
            entry[2] += 1
    return out


def _header(n):
    """The wire header of an Atexit message with `n` bytes of pairs (version 1, kind 6)."""
    return bytes(bytearray([1, 6, 0, 0, 0, 0, 0, 0, n & 0xFF, n >> 8, 0, 0]))


def _utf8(s):
    """Bytes of a name or path: Python 2's as they are, Python 3's with undecodable bytes
    restored (surrogateescape)."""
    if isinstance(s, bytes):
        return s
    return s.encode("utf-8", "replace" if _PY2 else "surrogateescape")


def _socket_send(path, pairs):
    """The daemon's socket (wire kind 6, Atexit): NUL-separated `package, path` pairs, every
    datagram built before the first is sent (a report is not split between the daemon and
    the spool). Only `_socket` is imported (not `socket` and what it pulls in, nor `struct`):
    the kernel sees whatever the hook imports, at the process's exit."""
    chunks, chunk = [], b""
    for pkg, where in pairs:
        item = _utf8(pkg) + b"\0" + _utf8(where) + b"\0"
        if len(item) > 4096:
            item = _utf8(pkg)[:1024] + b"\0\0"
        if len(chunk) + len(item) > 4096:
            chunks.append(chunk)
            chunk = b""
        chunk += item
    if chunk:
        chunks.append(chunk)
    _socket = sys.modules.get("_socket") or __import__("_socket")
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        s.settimeout(0.05)
        s.connect(path)
        for c in chunks:
            s.send(_header(len(c)) + c)
    finally:
        s.close()


def _username(uid):
    """The user's name: from `pwd` if the program loaded it, else /etc/passwd (importing pwd
    would be an import the kernel sees at exit); None for a user only a directory service
    knows."""
    pwd = sys.modules.get("pwd")
    if pwd is not None:
        return pwd.getpwuid(uid)[0]
    want = str(uid).encode()
    with open("/etc/passwd", "rb") as f:
        for line in f:
            fields = line.split(b":")
            if len(fields) > 2 and fields[2] == want:
                return fields[0].decode("utf-8", "replace")
    return None


def _append(path, text):
    """Appends in one write to a file of our own (never through a link, never another's)."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    # O_NONBLOCK: a FIFO planted under this user's name must not hang the program's exit.
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise OSError("%s: not owned by this user" % path)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_nlink != 1:
            raise OSError("%s: not a regular file with one link" % path)
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _report(modules):
    time = __import__("time")
    now = time.time()
    deadline = now + _CONFIG.get("budget_ms", 50) / 1000.0
    env = os.environ
    rank = _rank(env)
    if _CONFIG.get("rank0_only") and rank not in (None, 0):
        return
    packages = _packages(modules, deadline)
    # CPython's C string encoder, if the program loaded it (importing it here would be seen by
    # the kernel as the program's import).
    global _enc
    _enc = getattr(sys.modules.get("_json"), "encode_basestring_ascii", None)
    sock = _CONFIG.get("socket")
    if sock and os.path.exists(sock):
        try:
            _socket_send(sock, sorted((k, v[0]) for k, v in packages.items()))
            return
        except Exception as e:  # the daemon is gone or busy: the spool takes it
            _state["errors"].append("socket: %s: %s" % (type(e).__name__, e))
    spool = _CONFIG.get("spool")
    if not spool:
        return
    host = os.uname()[1].split(".")[0]
    uid = os.getuid()
    try:
        username = _username(uid)
    except Exception:
        username = None
    staff = False
    if _CONFIG.get("staff_gid") is not None:
        staff = _CONFIG["staff_gid"] in os.getgroups() or os.getgid() == _CONFIG["staff_gid"]
    try:
        start = _start_time()
    except Exception as e:
        _state["errors"].append("start time: %s" % e)
        start = now
    job = _job(env)
    in_container, runtime = _container(env)
    places = _Places(env.get("PYTHONPATH", "").split(":"))
    stamp = _micros_text(now)
    pid = os.getpid()
    common = [
        ("seq", 0), ("source", "atexit"), ("sources", ["atexit"]), ("host", host),
        ("system", _CONFIG.get("system") or env.get("SLURM_CLUSTER_NAME")),
        ("subsystem", _CONFIG.get("subsystem")), ("is_compute", job is not None),
        ("pid", pid), ("ppid", os.getppid()), ("root_pid", pid),
        ("process_start", _micros_text(start)), ("process_end", stamp),
        ("exit", "exited"), ("exit_code", None), ("exit_signal", None),
        ("executable", sys.executable or ""), ("python_version", "%d.%d" % sys.version_info[:2]),
        ("main", _main()), ("uid", uid), ("username", username), ("is_staff", staff),
        ("in_container", in_container), ("container_runtime", runtime), ("blas", _blas() if "numpy" in packages or "scipy" in packages else None),
        ("job_id", job), ("step_id", env.get("SLURM_STEP_ID") if job else None),
        ("job_source", "env" if job else None), ("rank", rank), ("n_ranks", None),
        ("num_nodes", _nodes(env)),
        ("qos", env.get("SLURM_JOB_QOS")), ("account", env.get("SLURM_JOB_ACCOUNT")),
        ("partition", env.get("SLURM_JOB_PARTITION")),
    ]
    head = u",".join(u'"%s":%s' % (k, _j(v)) for k, v in common)
    rid = u"atexit-" + _text(rand_hex()) + u"-"
    # One format per record: the fields common to the process are encoded once, above.
    line = u'{"record_id":"%s%d",' + head.replace(u"%", u"%%") + (
        u',"package":%s,"distribution":null,"version":%s,"env_kind":"%s","env_prefix":%s,'
        u'"first_path":%s,"n_files":%d,"first_seen":"' + stamp + u'"}\n')
    lines = []
    for i, (pkg, (where, version, n_files)) in enumerate(sorted(packages.items())):
        kind, prefix = places.kind(where)
        lines.append(line % (rid, i, _j(pkg), _j(version), kind, _j(prefix), _j(where or "<unknown>"), n_files))
    name = "atexit-%s-%d-%s.jsonl" % (host, uid, stamp[:10])
    _append(os.path.join(spool, name), u"".join(lines))


def at_exit(modules):
    """The exit-time work on `modules` (sys.modules' items as the program left them); never
    raises."""
    try:
        _report(modules)
    except BaseException as e:  # noqa: B902: nothing may escape into the user's exit
        _state["errors"].append("%s: %s" % (type(e).__name__, e))
    if _state["errors"] or _state["budget_exceeded"]:
        try:
            spool = _CONFIG.get("spool")
            if spool:
                host = os.uname()[1].split(".")[0]
                line = u'{"pid":%d,"host":%s,"budget_exceeded":%s,"errors":%s}\n' % (
                    os.getpid(), _j(host), _j(_state["budget_exceeded"]), _j(_state["errors"]))
                _append(os.path.join(spool, "atexit-%s-%d.errors" % (host, os.getuid())), line)
        except BaseException:  # noqa: B902
            pass


