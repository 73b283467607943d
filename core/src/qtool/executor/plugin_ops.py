"""Ops contributed by plugins through the ``qtool_register_ops`` hook."""

from __future__ import annotations

from ..plugins import PluginError, plugin_manager
from ..plugins.manager import on_reload

_loaded = False


def _register(op_type: str, function, domain: str = "") -> None:
    """The ``register`` callable plugins receive; registering the same function again is a no-op. The op library
    (torch) is imported here, by the first plugin that registers an op, never only to ask the plugins."""
    from .ops import get_op, is_supported, register_op

    if not isinstance(op_type, str) or not op_type or not callable(function):
        raise PluginError(f"qtool_register_ops: register(op_type, function, domain='') got {op_type!r}, {function!r}")
    if is_supported(op_type, domain):
        if get_op(op_type, domain) is function:
            return
        raise PluginError(f"op {op_type!r} in domain {domain or 'ai.onnx'!r} is already registered")
    register_op(op_type, function, domain)


def load_plugin_ops(*, reload: bool = False) -> None:
    """Let every plugin register its ops, once (``reload``: ask them again, e.g. after registering one in-process)."""
    global _loaded
    if _loaded and not reload:
        return
    _loaded = True
    plugin_manager().call_each("qtool_register_ops", register=_register)


def _forget() -> None:
    global _loaded
    _loaded = False


on_reload(_forget)
