"""One qtool run at a time in a process.

A run changes process-wide state while it works: the warning filters that turn its passes' warnings into its own
diagnostics, torch's thread count, the simulation's run counter that decides its agreement check, and modules
imported on first use. Calls from several threads therefore take turns; each then sees only its own state and
returns only its own diagnostics. A call made inside a run (analyse calls quantize; the user's calibration
generator, which calibration reads in a thread of its own, calls explain) goes ahead: it is part of that run.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

_RUN = threading.Lock()
_IN_RUN = contextvars.ContextVar("qtool_in_run", default=False)  # threads a run starts copy its context
_Function = TypeVar("_Function", bound=Callable)


def one_at_a_time(function: _Function) -> _Function:
    """``function`` waiting for any run in another thread to end before it starts."""

    @functools.wraps(function)
    def taking_turns(*args, **kwargs):
        if _IN_RUN.get():
            return function(*args, **kwargs)
        with _RUN:
            token = _IN_RUN.set(True)
            try:
                return function(*args, **kwargs)
            finally:
                _IN_RUN.reset(token)

    return taking_turns  # type: ignore[return-value]
