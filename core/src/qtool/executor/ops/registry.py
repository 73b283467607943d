"""Registry mapping ONNX (domain, op_type) pairs to torch implementations."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OpContext:
    """Static facts about the node being executed."""

    op_type: str
    node_name: str
    opset: int  # opset version of the node's domain in the model
    num_outputs: int  # number of outputs the node declares (incl. optional ones)
    device: torch.device
    input_types: tuple = ()  # numpy dtypes the graph declares for the inputs (None where unknown)


OpFunction = Callable[[OpContext, dict[str, Any], list[torch.Tensor | None]], list[torch.Tensor]]


class UnsupportedOpError(KeyError):
    """Raised when no implementation is registered for an op."""

    def __init__(self, op_type: str, domain: str = "") -> None:
        super().__init__(op_type, domain)
        self.op_type = op_type
        self.domain = domain

    def __str__(self) -> str:
        return f"unsupported op {self.op_type!r} in domain {self.domain or 'ai.onnx'!r}"


_REGISTRY: dict[tuple[str, str], OpFunction] = {}
_SOURCES: dict[tuple[str, str], str] = {}  # the module that registered each op (its family in the docs)


def _key(op_type: str, domain: str) -> tuple[str, str]:
    # "" and "ai.onnx" name the same default domain.
    return ("" if domain == "ai.onnx" else domain, op_type)


def register_op(op_type: str, fn: OpFunction, domain: str = "", *, replace: bool = False,
                source: str | None = None) -> None:
    """Register ``fn`` for ``op_type``; duplicates need ``replace=True``. ``source``: the registering module
    (default: the caller's)."""
    key = _key(op_type, domain)
    if key in _REGISTRY and not replace:
        raise ValueError(f"op {op_type!r} in domain {domain or 'ai.onnx'!r} is already registered")
    _REGISTRY[key] = fn
    _SOURCES[key] = source or sys._getframe(1).f_globals.get("__name__", "")


def op_impl(*op_types: str, domain: str = "") -> Callable[[OpFunction], OpFunction]:
    """Decorator registering the function for every name in ``op_types``."""

    def decorate(fn: OpFunction) -> OpFunction:
        for op_type in op_types:
            register_op(op_type, fn, domain, source=fn.__module__)
        return fn

    return decorate


def get_op(op_type: str, domain: str = "") -> OpFunction:
    """Return the implementation of ``op_type`` or raise UnsupportedOpError."""
    try:
        return _REGISTRY[_key(op_type, domain)]
    except KeyError:
        raise UnsupportedOpError(op_type, domain) from None


def is_supported(op_type: str, domain: str = "") -> bool:
    return _key(op_type, domain) in _REGISTRY


def op_source(op_type: str, domain: str = "") -> str:
    """The module that registered ``op_type``."""
    return _SOURCES[_key(op_type, domain)]


def supported_op_types() -> list[tuple[str, str]]:
    """All registered ops as sorted (domain, op_type) pairs."""
    return sorted(_REGISTRY)
