"""ParameterQuantize: scale and offset of every parameter operand from its values (min/max) -> ACTIVATED.

Per-tensor, per-channel (reduced over every axis but the channel axis) and
per-block (blocks of ``block_size`` along the channel axis, one parameter per
block and per position on the other axes).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..quant import QuantizationState, QuantScheme, compute_scale_offset
from ..quant.policy import QuantizationPolicy as P
from .base import Pass, PassError, PassResult


class ParameterQuantize(Pass):
    name = "ParameterQuantize"

    def call(self, graph: Graph) -> PassResult:
        done = []
        for op in graph.topological_order():
            if op.quant is None:
                continue
            for var, tqc in zip(op.inputs, op.quant.inputs, strict=True):
                if var is None or tqc is None or not var.is_parameter or tqc.state is not QuantizationState.INITIAL:
                    continue
                try:
                    lo, hi = value_range(np.asarray(var.value, dtype=np.float64), tqc.scheme)
                except ValueError as exc:
                    raise PassError(f"op {op.name!r}, parameter {var.name!r}: {exc}") from exc
                tqc.set_params(*compute_scale_offset(tqc.scheme, lo, hi))
                done.append(var.name)
        return PassResult(graph, bool(done), {"quantized": done})

    def ensures(self, graph: Graph) -> None:
        for op in graph.operations.values():
            for var, tqc in zip(op.inputs, op.quant.inputs if op.quant else [], strict=False):
                if var is not None and var.is_parameter and tqc is not None and tqc.state is QuantizationState.INITIAL:
                    raise PassError(f"parameter {var.name!r} of op {op.name!r} has no scale after {self.label}")


def value_range(value: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``value`` at the scheme's granularity."""
    if not scheme.is_per_channel:
        return value.min(initial=0.0), value.max(initial=0.0)
    if value.ndim == 0:
        raise ValueError(f"a scalar cannot be quantized {scheme.short()}")
    axis = scheme.channel_axis % value.ndim
    if scheme.policy & P.PER_BLOCK:
        return _block_range(value, axis, scheme.block_size)
    others = tuple(a for a in range(value.ndim) if a != axis)
    return value.min(axis=others), value.max(axis=others)


def _block_range(value: np.ndarray, axis: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``block`` entries along ``axis``; the last block may be short."""
    length = value.shape[axis]
    blocks = -(-length // block)
    pad = [(0, 0)] * value.ndim
    pad[axis] = (0, blocks * block - length)
    padded = np.pad(value, pad, mode="edge")
    shape = value.shape[:axis] + (blocks, block) + value.shape[axis + 1:]
    grouped = padded.reshape(shape)
    return grouped.min(axis=axis + 1), grouped.max(axis=axis + 1)
