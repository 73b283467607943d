"""Torch implementations of ONNX operators; importing registers them all."""

from . import activation  # noqa: F401
from .registry import (
    OpContext,
    OpFunction,
    UnsupportedOpError,
    get_op,
    is_supported,
    op_impl,
    register_op,
    supported_op_types,
)

__all__ = [
    "OpContext",
    "OpFunction",
    "UnsupportedOpError",
    "get_op",
    "is_supported",
    "op_impl",
    "register_op",
    "supported_op_types",
]
