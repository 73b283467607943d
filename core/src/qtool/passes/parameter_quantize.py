"""ParameterQuantize: scale and offset of every parameter operand from its values -> ACTIVATED.

Per-tensor, per-channel (reduced over every axis but the channel axis) and
per-block (blocks of ``block_size`` along the channel axis, one parameter per
block and per position on the other axes). The range is the values' min/max;
with the scheme's observer ``"mse"`` (or ``"mse:<candidates>"``) it is, per
tensor, channel or block, the scaled-down min/max whose quantization leaves the
least squared error on the values themselves (other observers apply to
activations only).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..quant import QuantizationState, QuantScheme, compute_scale_offset, fake_quantize
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
                    value = finite(np.asarray(var.value, dtype=np.float64))
                    lo, hi = weight_range(value, tqc.scheme)
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


MSE_CANDIDATES = 100
WEIGHT_OBSERVERS = ("minmax", "mse")  # what weight_range understands; the config refuses the others for weights
_CHUNK = 1 << 22  # values fake-quantized per numpy op by the mse weight search


def finite(value: np.ndarray) -> np.ndarray:
    """``value``, refused (ValueError naming the first one) if it holds a NaN or an infinity: no scale represents
    it, and rounding would turn it into an ordinary number the float model never had."""
    bad = ~np.isfinite(value)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{int(bad.sum())} non-finite value(s) ({value[where]} at index {list(where)}): "
                         "a quantized weight must be finite")
    return value


def weight_range(value: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """The range a parameter gets: :func:`value_range`, or its least-error fraction for observer ``mse``."""
    lo, hi = value_range(value, scheme)
    name, _, option = (scheme.observer or "minmax").partition(":")
    if name != "mse":
        return lo, hi
    try:
        candidates = int(float(option)) if option else MSE_CANDIDATES
    except ValueError:
        raise ValueError(f"observer {scheme.observer!r}: candidates must be a number") from None
    if candidates < 1:
        raise ValueError(f"observer {scheme.observer!r}: candidates must be >= 1")
    return _least_error_range(value, scheme, lo, hi, candidates)


def _least_error_range(value: np.ndarray, scheme: QuantScheme, lo, hi, candidates: int):
    """``(k / candidates) * [lo, hi]`` for the k (per channel or block) whose fake-quantized values err least; ties
    wide.

    Candidates are evaluated many at a time (one row per candidate and channel or block): few large numpy ops, not
    many small ones. The error is summed in float64 over the float32 squares.
    """
    from ..calibration.observers.mse import rows_scheme  # the calibration package: only for this search

    rows = np.ascontiguousarray(_rows(value, scheme), dtype=np.float32)
    rows_of = rows_scheme(scheme)
    low, high = np.reshape(lo, -1), np.reshape(hi, -1)
    fractions = np.arange(candidates, 0, -1) / candidates  # widest first: argmin keeps the widest of equals
    step = max(1, _CHUNK // max(rows.size, 1))
    errors = []
    for start in range(0, candidates, step):
        chosen = fractions[start:start + step, None]  # scales by the scheme's own rule (full-range blocks)
        scale, offset = compute_scale_offset(scheme, (chosen * low).reshape(-1), (chosen * high).reshape(-1))
        tiled = np.tile(rows, (len(chosen), 1))
        difference = fake_quantize(tiled, rows_of, scale, offset)
        difference -= tiled
        error = np.square(difference, out=difference).sum(axis=1, dtype=np.float64)
        errors.append(error.reshape(len(chosen), -1))
    best = fractions[np.argmin(np.concatenate(errors), axis=0)].reshape(np.shape(lo))
    return lo * best, hi * best


def _rows(value: np.ndarray, scheme: QuantScheme) -> np.ndarray:
    """One row per range of :func:`value_range`, in its order: the tensor, each channel, or each block (a short last
    block padded with zeros, which every candidate range holds exactly)."""
    if not scheme.is_per_channel:
        return value.reshape(1, -1)
    axis = scheme.channel_axis % value.ndim
    if not scheme.policy & P.PER_BLOCK:
        return np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
    block = scheme.block_size
    pad = [(0, 0)] * value.ndim
    pad[axis] = (0, -value.shape[axis] % block)
    padded = np.pad(value, pad)
    grouped = padded.reshape(value.shape[:axis] + (-1, block) + value.shape[axis + 1:])
    return np.moveaxis(grouped, axis + 1, -1).reshape(-1, block)


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
