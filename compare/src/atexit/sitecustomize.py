# pyusage atexit collector: written by `pyusage atexit install`; edit the install, not this file.
#
# Imported by site.py at start-up when its directory is on PYTHONPATH, as NERSC-style monitoring
# did. At interpreter exit it lists the top-level packages in sys.modules and writes one record
# per package in pyusage's schema (`source = "atexit"`): to the pyusage daemon's socket when one
# listens, else as JSON lines under the spool directory. It never makes the program fail: every
# error is caught and counted, and the exit-time work stops at a time budget. Python 2.7 and 3.x,
# standard library only (and only modules already imported at start-up: os, sys, time, atexit).
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
_state = {"errors": [], "budget_exceeded": False}


def _j(v):
    """JSON text of a value (json is not imported at start-up in 3.11+: not imported here)."""
    if v is None:
        return u"null"
    if v is True:
        return u"true"
    if v is False:
        return u"false"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _text(int(v))
    if isinstance(v, list):
        return u"[" + u",".join(_j(x) for x in v) + u"]"
    if not isinstance(v, _text):
        v = v.decode("utf-8", "replace") if isinstance(v, bytes) else _text(v)
    return u'"' + v.translate(_ESCAPES) + u'"'


def _micros_text(t):
    us = int(round(t * 1e6))
    g = __import__("time").gmtime(us // 1000000)
    return u"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (g[0], g[1], g[2], g[3], g[4], g[5], us % 1000000)


def _start_time():
    """Exec time from /proc (clock ticks since boot + boot time): about 10 ms fine."""
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
                return int(v)
            except ValueError:
                return None
    return None


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


def _where(mod, name):
    """The module's file, or <built-in> / <frozen> for one without, or '' (unknown)."""
    f = getattr(mod, "__file__", None)
    if f:
        return os.path.abspath(f)
    if name in sys.builtin_module_names:
        return "<built-in>"
    spec = getattr(mod, "__spec__", None)
    if getattr(spec, "origin", None) == "frozen" or "Frozen" in type(getattr(mod, "__loader__", None)).__name__:
        return "<frozen>"
    return ""


def _env_kind(path, pythonpath):
    """Where a file lives, cheaply; the daemon's resolver is the careful one."""
    if path in ("<built-in>", "<frozen>"):
        return "stdlib", None
    if not path:
        return "unknown", None
    prefix, base = sys.prefix, getattr(sys, "base_prefix", getattr(sys, "real_prefix", sys.prefix))
    site_mod = sys.modules.get("site")
    user_site = getattr(site_mod, "USER_SITE", None)
    in_site = "/site-packages/" in path or "/dist-packages/" in path
    if in_site:
        if user_site and path.startswith(user_site + "/"):
            return "user", os.path.dirname(user_site)
        if prefix != base and path.startswith(prefix + "/"):
            return "venv", prefix
        for p in (prefix, base):
            if path.startswith(p + "/"):
                if os.path.isdir(os.path.join(p, "conda-meta")):
                    return "conda", p
                return "system", p
        return "system", None
    for p in (base, prefix):
        if path.startswith(p + "/lib/python"):
            return "stdlib", None
    for p in pythonpath:
        if p and path.startswith(p.rstrip("/") + "/"):
            return "pythonpath", None
    return "unknown", None


def _packages(deadline):
    only = _CONFIG.get("packages")
    out = {}
    n = 0
    for name, mod in list(sys.modules.items()):
        n += 1
        if n % 64 == 0 and __import__("time").time() > deadline:
            _state["budget_exceeded"] = True
            break
        if mod is None or not name or name == "__main__":
            continue
        top = name.partition(".")[0]
        if only is not None and top not in only:
            continue
        entry = out.get(top)
        if entry is None:
            topmod = sys.modules.get(top)
            version = getattr(topmod, "__version__", None)
            if not isinstance(version, (str, _text)) or len(version) > 64:
                version = None
            entry = out[top] = [_where(topmod, top) if topmod is not None else "", version, 0]
        if getattr(mod, "__file__", None):
            entry[2] += 1
    return out


def _socket_send(path, pairs):
    """The daemon's socket (wire kind 6, Atexit): NUL-separated `package, path` pairs."""
    import socket
    import struct

    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.settimeout(0.05)
        s.connect(path)
        chunk = b""
        for pkg, where in pairs:
            item = pkg.encode("utf-8", "replace") + b"\0" + where.encode("utf-8", "replace") + b"\0"
            if len(item) > 4096:
                item = pkg.encode("utf-8", "replace") + b"\0\0"
            if len(chunk) + len(item) > 4096:
                s.send(struct.pack("<BBBBHHHH", 1, 6, 0, 0, 0, 0, len(chunk), 0) + chunk)
                chunk = b""
            chunk += item
        if chunk:
            s.send(struct.pack("<BBBBHHHH", 1, 6, 0, 0, 0, 0, len(chunk), 0) + chunk)
    finally:
        s.close()


def _append(path, text):
    """Appends in one write to a file of our own (never through a link, never another's)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_uid != os.getuid():
            raise OSError("%s: not owned by this user" % path)
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _report():
    time = __import__("time")
    now = time.time()
    deadline = now + _CONFIG.get("budget_ms", 50) / 1000.0
    env = os.environ
    rank = _rank(env)
    if _CONFIG.get("rank0_only") and rank not in (None, 0):
        return
    packages = _packages(deadline)
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
        import pwd

        username = pwd.getpwuid(uid)[0]
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
    pythonpath = env.get("PYTHONPATH", "").split(":")
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
        ("in_container", in_container), ("container_runtime", runtime), ("blas", _blas()),
        ("job_id", job), ("step_id", env.get("SLURM_STEP_ID") if job else None),
        ("job_source", "env" if job else None), ("rank", rank), ("n_ranks", None),
        ("num_nodes", int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)),
        ("qos", env.get("SLURM_JOB_QOS")), ("account", env.get("SLURM_JOB_ACCOUNT")),
        ("partition", env.get("SLURM_JOB_PARTITION")),
    ]
    head = u",".join(u'"%s":%s' % (k, _j(v)) for k, v in common)
    lines = []
    rand = os.urandom(16)
    for i, (pkg, (where, version, n_files)) in enumerate(sorted(packages.items())):
        kind, prefix = _env_kind(where, pythonpath)
        rid = u"atexit-%s-%d" % (_text(rand.hex() if not _PY2 else rand.encode("hex")), i)
        tail = [
            ("package", pkg), ("distribution", None), ("version", version), ("env_kind", kind),
            ("env_prefix", prefix), ("first_path", where or "<unknown>"), ("n_files", n_files),
            ("first_seen", stamp),
        ]
        lines.append(u'{"record_id":%s,%s,%s}\n' % (_j(rid), head, u",".join(u'"%s":%s' % (k, _j(v)) for k, v in tail)))
    name = "atexit-%s-%d-%s.jsonl" % (host, uid, stamp[:10])
    _append(os.path.join(spool, name), u"".join(lines))


def _at_exit():
    try:
        _report()
    except BaseException as e:  # noqa: B902: nothing may escape into the user's exit
        _state["errors"].append("%s: %s" % (type(e).__name__, e))
    if _state["errors"] or _state["budget_exceeded"]:
        try:
            spool = _CONFIG.get("spool")
            if spool:
                host = os.uname()[1].split(".")[0]
                line = u'{"pid":%d,"host":%s,"budget_exceeded":%s,"errors":%s}\n' % (
                    os.getpid(), _j(host), _j(_state["budget_exceeded"]), _j([_text(e) for e in _state["errors"]]))
                _append(os.path.join(spool, "atexit-%s-%d.errors" % (host, os.getuid())), line)
        except BaseException:  # noqa: B902
            pass


def _chain():
    """Imports the sitecustomize this one shadows (later on sys.path), as site.py would."""
    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.get(__name__)
    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        del sys.modules[__name__]
        try:
            __import__("sitecustomize")
        except ImportError as e:
            if getattr(e, "name", "sitecustomize") not in ("sitecustomize", None):
                raise
    except Exception as e:  # as site.py reports an error in sitecustomize, and goes on
        sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n%s: %s\n" % (type(e).__name__, e))
    finally:
        sys.path[:] = saved
        chained = sys.modules.get("sitecustomize")
        if chained is not None and chained is not me:
            me.chained = chained
        sys.modules[__name__] = me


try:
    __import__("atexit").register(_at_exit)
except Exception as _e:  # noqa: B902
    _state["errors"].append("register: %s" % _e)
_chain()
