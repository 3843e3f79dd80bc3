# In-process oracle for the recall/precision test: at exit, writes the file-backed modules in
# sys.modules (name and file, one JSON object per line) to $PYUSAGE_ORACLE_DIR/<pid>.jsonl.
# It imports nothing that is not already imported at start-up (os, sys, atexit are), so it
# does not add to what it measures.
import atexit
import os
import sys

_out = os.environ.get("PYUSAGE_ORACLE_DIR")


def _dump():
    if not _out:
        return
    path = os.path.join(_out, "%d.jsonl" % os.getpid())
    with open(path, "w") as f:
        for name, mod in list(sys.modules.items()):
            file = getattr(mod, "__file__", None)
            origin = getattr(getattr(mod, "__spec__", None), "origin", None)
            # Frozen modules carry a __file__ but were never read from it.
            if name == "__mp_main__":
                continue  # multiprocessing's alias of __main__
            if isinstance(file, str) and file and origin not in ("frozen", "built-in"):
                if name == "__main__":
                    # `python -m pkg.mod`: the module runs as __main__; a script has no spec.
                    name = getattr(getattr(mod, "__spec__", None), "name", None)
                    if not name:
                        continue
                f.write('{"module": %s, "file": %s}\n' % (_q(name), _q(file)))


def _q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


atexit.register(_dump)
