"""One qtool run at a time in a process.

A run changes process-wide state while it works: the warning filters that turn its passes' warnings into its own
diagnostics, torch's thread count, the simulation's run counter that decides its agreement check, and modules
imported on first use. Calls from several threads therefore take turns (a re-entrant lock: a run may call another,
as analyse calls quantize); each then sees only its own state and returns only its own diagnostics.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

_RUN = threading.RLock()
_Function = TypeVar("_Function", bound=Callable)


def one_at_a_time(function: _Function) -> _Function:
    """``function`` waiting for any run in another thread to end before it starts."""

    @functools.wraps(function)
    def taking_turns(*args, **kwargs):
        with _RUN:
            return function(*args, **kwargs)

    return taking_turns  # type: ignore[return-value]
