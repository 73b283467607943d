"""Observer callbacks run after each op: ``fn(op, inputs, outputs)``."""

from __future__ import annotations

from collections.abc import Callable

HookFn = Callable[..., None]


class HookHandle:
    """Returned by ``add_hook``; ``remove()`` detaches the hook (twice is harmless)."""

    def __init__(self, hooks: dict[int, HookFn], key: int) -> None:
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Hooks:
    """An ordered set of hooks; calling it calls each in the order they were added."""

    def __init__(self) -> None:
        self._hooks: dict[int, HookFn] = {}
        self._next = 0

    def add(self, fn: HookFn) -> HookHandle:
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {fn!r}")
        self._next += 1
        self._hooks[self._next] = fn
        return HookHandle(self._hooks, self._next)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __call__(self, op, inputs, outputs) -> None:
        for fn in list(self._hooks.values()):
            fn(op, inputs, outputs)
