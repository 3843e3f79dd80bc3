# pyusage atexit collector: written by `pyusage atexit install`; edit the install, not this file.
#
# Imported by site.py at start-up when its directory is on PYTHONPATH, as NERSC-style monitoring
# did. It only registers an exit handler (and imports a sitecustomize it shadows); the handler
# imports the exit-time part, _pyusage_atexit (precompiled at install), from this directory.
# Nothing it does can make the program fail.
import sys


def _pyusage_at_exit(here=__file__):
    try:
        # What the program imported, before this handler imports anything.
        modules = list(sys.modules.items())
        import os

        saved = sys.path[:]
        sys.path[:] = [os.path.dirname(os.path.abspath(here))] + saved
        try:
            body = __import__("_pyusage_atexit")
        finally:
            sys.path[:] = saved
        body.at_exit(modules)
    except BaseException:  # noqa: B902: nothing may escape into the user's exit
        pass


def _chain():
    """Imports the sitecustomize this one shadows (later on sys.path), as site.py would."""
    import os

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


def _register(handler):
    if sys.version_info[0] == 2 and "atexit" not in sys.modules:
        # Python 2's atexit is a .py file: importing it would be an import the kernel sees.
        # It builds on sys.exitfunc (and keeps one set before it is imported): so do we.
        previous = getattr(sys, "exitfunc", None)

        def exitfunc():
            try:
                if previous is not None:
                    previous()
            finally:
                handler()

        sys.exitfunc = exitfunc
    else:
        __import__("atexit").register(handler)


try:
    _register(_pyusage_at_exit)
except Exception:  # noqa: B902
    pass
_chain()
