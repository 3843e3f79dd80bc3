"""A FUSE file system that answers one user only: the hostile mount of issue 9.

Serves, read-only, a tiny environment (`pyvenv.cfg`, `lib/python3.11/site-packages/hung/
__init__.py`, `hung-3.0.dist-info/{METADATA,RECORD}`) to requests from uid ANSWER_UID, and
reads but never answers anyone else's: a process of another user (the daemon's resolver, as
root) that touches it hangs until this server exits. Speaks the kernel's FUSE protocol on
/dev/fuse directly (standard library only). Run as root:

    python3 hung_fuse.py MOUNTPOINT ANSWER_UID

It prints `ready` once mounted; on SIGTERM it unmounts (lazily) and exits, which aborts the
requests it left unanswered.
"""
import ctypes, errno, os, signal, stat, struct, sys

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_READ = 1, 2, 3, 14, 15
FUSE_RELEASE, FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR, FUSE_READDIR = 18, 25, 26, 27, 28
FUSE_RELEASEDIR, FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET = 29, 36, 38, 42
NO_REPLY = {FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT}
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")

FILES = {
    "pyvenv.cfg": b"home = /usr/bin\n",
    "lib/python3.11/site-packages/hung/__init__.py": b"",
    "lib/python3.11/site-packages/hung-3.0.dist-info/METADATA": b"Name: hung\nVersion: 3.0\n",
    "lib/python3.11/site-packages/hung-3.0.dist-info/RECORD": b"hung/__init__.py,,\n",
}


def build_tree():
    """nodeid -> (name, parent, children dict or bytes)."""
    nodes = {1: ("", 0, {})}
    for path, data in FILES.items():
        parent = 1
        parts = path.split("/")
        for i, part in enumerate(parts):
            kids = nodes[parent][2]
            if part not in kids:
                nid = len(nodes) + 1
                nodes[nid] = (part, parent, data if i == len(parts) - 1 else {})
                kids[part] = nid
            parent = kids[part]
    return nodes


NODES = build_tree()


def attr(nid):
    content = NODES[nid][2]
    if isinstance(content, dict):
        mode, size, nlink = stat.S_IFDIR | 0o755, 4096, 2
    else:
        mode, size, nlink = stat.S_IFREG | 0o644, len(content), 1
    # ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid rdev
    # blksize flags
    return struct.pack("<QQQQQQIIIIIIIIII", nid, size, (size + 511) // 512, 1, 1, 1, 0, 0, 0,
                       mode, nlink, 0, 0, 0, 4096, 0)


def entry(nid):
    # nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec attr
    return struct.pack("<QQQQII", nid, 1, 3600, 3600, 0, 0) + attr(nid)


def dirents(nid, offset):
    kids = [(".", nid), ("..", NODES[nid][1] or 1)] + sorted(NODES[nid][2].items())
    out = b""
    for i, (name, kid) in enumerate(kids[offset:], start=offset + 1):
        n = name.encode()
        typ = 4 if isinstance(NODES[kid][2], dict) else 8
        ent = struct.pack("<QQII", kid, i, len(n), typ) + n
        out += ent + b"\0" * (-len(ent) % 8)
    return out


def handle(op, nid, body):
    """(error, payload) for one request."""
    if op == FUSE_INIT:
        major, minor, readahead, flags = struct.unpack_from("<IIII", body)
        # major minor max_readahead flags max_background congestion max_write time_gran
        # max_pages map_alignment flags2 max_stack_depth unused[6]
        return 0, struct.pack("<IIIIHHIIHHII6I", 7, min(minor, 31), readahead, 0, 16, 12,
                              1 << 17, 1, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    if nid not in NODES:
        return -errno.ENOENT, b""
    content = NODES[nid][2]
    if op == FUSE_LOOKUP:
        name = body.split(b"\0", 1)[0].decode()
        if not isinstance(content, dict) or name not in content:
            return -errno.ENOENT, b""
        return 0, entry(content[name])
    if op == FUSE_GETATTR:
        return 0, struct.pack("<QII", 3600, 0, 0) + attr(nid)
    if op in (FUSE_OPEN, FUSE_OPENDIR):
        return 0, struct.pack("<QII", 0, 0, 0)
    if op == FUSE_READ:
        _, offset, size = struct.unpack_from("<QQI", body)
        return 0, content[offset:offset + size]
    if op == FUSE_READDIR:
        _, offset, size = struct.unpack_from("<QQI", body)
        return 0, dirents(nid, offset)[:size] if offset < 2 + len(content) else b""
    if op in (FUSE_RELEASE, FUSE_RELEASEDIR, FUSE_FLUSH):
        return 0, b""
    return -errno.ENOSYS, b""


def main():
    mnt, answer_uid = sys.argv[1], int(sys.argv[2])
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"pyusage-hung", mnt.encode(), b"fuse", 0x2 | 0x4, opts) != 0:  # NOSUID|NODEV
        sys.exit(f"mount: {os.strerror(ctypes.get_errno())}")

    def stop(*_):
        libc.umount2(mnt.encode(), 2)  # MNT_DETACH
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        try:
            req = os.read(fd, 1 << 20)
        except OSError as e:
            if e.errno in (errno.EINTR, errno.ENOENT):
                continue
            stop()
        length, op, unique, nid, uid, gid, pid, _, _ = IN_HEADER.unpack_from(req)
        if op in NO_REPLY:
            continue
        if op == FUSE_DESTROY:
            stop()
        if op != FUSE_INIT and uid != answer_uid:
            continue  # read, never answered: the caller waits until this server exits
        err, payload = handle(op, nid, req[IN_HEADER.size:length])
        if err:
            payload = b""
        os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), err, unique) + payload)


if __name__ == "__main__":
    main()
