"""The ``qtool`` command's entry point (and ``python -m qtool``'s).

Wraps :func:`qtool.cli.main.main` so that a Ctrl-C or a reader going away at any moment, from the first import of
the command modules to the interpreter's exit, ends the process with its exit code and at most one line, never a
traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 128 + signal.SIGPIPE
_pending = threading.Event()  # a Ctrl-C held back while an import ran, not raised yet


def run() -> None:
    signal.signal(signal.SIGINT, _interrupt)
    try:
        from .main import main  # a Ctrl-C here, while the command modules are imported, ends as one in the command

        code = main()
        sys.stdout.flush()  # what is still buffered goes now, where a closed pipe can be told apart
    except BrokenPipeError:
        code = quiet_stdout()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        code = report_interrupted()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the interpreter's shutdown (threads, atexit) runs to its end
    if _pending.is_set():  # a Ctrl-C held back in an import that the command outran
        code = report_interrupted()
    sys.exit(code)


def _interrupt(signum, frame) -> None:
    """Ctrl-C as KeyboardInterrupt, but never inside an import: an extension module (numpy's, onnxruntime's)
    interrupted while it loads is left half made and crashes the process. There it is raised again 20 ms later."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            _pending.set()
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        frame = frame.f_back
    _pending.clear()
    raise KeyboardInterrupt


def report_interrupted() -> int:
    print("qtool: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C or came of one (an ImportError an interrupted import raised from it, where
    Python code imports outside :func:`run`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def quiet_stdout() -> int:
    """Point stdout at the null device after its reader went away (``qtool ... | head``), so that Python's flush at
    exit does not fail again; returns the exit code a shell reports for a writer a closed pipe stopped."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
