"""Every hook a qtool plugin can implement.

A plugin is a module named by an entry point in the ``qtool`` group. It
implements any of these functions, decorated with ``qtool.hookimpl``. Each hook
receives a ``register`` callable and hands things over by calling it; the core
owns the registries and rejects duplicates.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("qtool")
hookimpl = pluggy.HookimplMarker("qtool")


@hookspec
def qtool_register_platforms(register: Callable[[type], None]) -> None:
    """Register target platforms: call ``register(PlatformClass)`` for each.

    A platform class subclasses :class:`qtool.Platform` and sets ``name``.
    """


@hookspec
def qtool_register_observers(register: Callable[[str, type], None]) -> None:
    """Register calibration observers: call ``register(name, ObserverClass)``."""


@hookspec
def qtool_register_ops(register: Callable[..., None]) -> None:
    """Register torch implementations of ONNX ops for the executor.

    Call ``register(op_type, function, domain="")`` where ``function(ctx, attrs, inputs)``
    returns a list of torch tensors (see :mod:`qtool.executor.ops.registry`).
    """


@hookspec
def qtool_register_passes(register: Callable[[str, type], None]) -> None:
    """Register extra passes by name: call ``register(name, PassClass)``.

    A configuration inserts them into the default order with a ``[[pass]]``
    entry: ``name``, ``after`` (the pass it follows) and ``options``.
    """


@hookspec
def qtool_register_commands(cli) -> None:
    """Add sub-commands to the ``qtool`` command line.

    ``cli`` is the root :class:`argparse._SubParsersAction`; add a parser and set
    its ``handler`` default to a function taking the parsed arguments and
    returning an exit code.
    """
