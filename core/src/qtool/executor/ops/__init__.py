"""Torch implementations of ONNX operators; importing registers them all."""

from . import (  # noqa: F401  (imported to register their ops)
    activation,
    cast,
    conv,
    creation,
    elementwise,
    identity,
    indexing,
    integer,
    linear,
    logical,
    norm,
    pad,
    pool,
    recurrent,
    reduce,
    resize,
    sequence,
    shape,
    slice,
    softmax,
)
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
