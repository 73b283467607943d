"""Per-channel views of a layer weight: ranges and scaling of output and input channels.

A weight is seen as ``(groups, out per group, in per group, rest)``: a weight
whose output-channel axis (:func:`qtool.ops.weight_axis`) is first (Conv
``(O, I/g, k...)``, Gemm with transB) directly; other Gemm/MatMul weights after
putting the output axis first (one group). Output channel ``o`` and input
channel ``i`` are then numbered as the layer's output and input tensors number them.
"""

from __future__ import annotations

import numpy as np

from ...ir import Operation
from ...ops import weight_axis

#: the layer types these views support (a ConvTranspose's output axis holds one group's channels: not supported)
CHANNEL_TYPES = ("Conv", "Gemm", "MatMul")


def _out_first(op: Operation) -> bool:
    """True when the stored weight has its output axis first (Conv, Gemm with transB)."""
    return weight_axis(op, op.inputs[1].name) == 0


def grouped(op: Operation, weight: np.ndarray) -> np.ndarray:
    """The weight as ``(groups, out per group, in per group, rest)``."""
    if _out_first(op):
        groups = op.attributes.get("group", 1)
        return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)
    matrix = weight.T
    return matrix.reshape(1, matrix.shape[0], matrix.shape[1], 1)


def ungrouped(op: Operation, view: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Inverse of :func:`grouped`, in ``like``'s shape and dtype."""
    if _out_first(op):
        return view.reshape(like.shape).astype(like.dtype, copy=False)
    return view.reshape(like.shape[::-1]).T.astype(like.dtype, copy=False)


def in_ranges(op: Operation, weight: np.ndarray) -> np.ndarray:
    """max |w| per input channel (the channels of the layer's input tensor)."""
    return np.abs(grouped(op, weight)).max(axis=(1, 3)).reshape(-1)


def scale_in(op: Operation, weight: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """The weight with input channel ``i`` multiplied by ``factors[i]``."""
    view = grouped(op, weight).astype(np.float64)
    return ungrouped(op, view * factors.reshape(view.shape[0], 1, view.shape[2], 1), weight)


def in_channels(op: Operation, weight: np.ndarray) -> int:
    view = grouped(op, weight)
    return view.shape[0] * view.shape[2]
