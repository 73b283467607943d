"""ChannelSplit: split a layer's outlier input channels into several smaller copies, all still int8.

For a MatMul or Gemm (without transA) with a constant 2-D weight whose input has a channel at least
``min_ratio`` times the median channel (per-channel ``max|x|`` over calibration samples, float graph), every
channel ``j`` above ``ratio`` times the median is split into ``k_j = ceil(max|x_j| / (ratio * median))``
channels of ``x_j / k_j`` each, and the weight's input row ``j`` is repeated for every copy:
``sum_k (x_j / k_j) w_j = x_j w_j``, so the float function is unchanged while the input's per-tensor range
shrinks to about ``ratio`` times the median channel (outlier channel splitting, Zhao et al. 2019, on activations).
A ``Gather`` along the channel axis makes the copies; the division is folded into the constant of a ``Mul``
that produces the input for this layer alone (a GELU's last ``* 0.5``), otherwise a ``Mul`` after the Gather
does it. Both stay float where a platform quantizes only compute ops (onnxruntime); the layer keeps an integer
kernel and reads ``sum(k_j - 1)`` more input channels. ``max_growth`` caps those extra channels at a share of
the layer's input channels: the limit then rises above ``ratio`` times the median until the copies fit, so that
no channel is left above it (the copies of a channel round alike: ``k`` of them gain only where the range
shrinks about ``k``-fold).
"""

from __future__ import annotations

import math

import numpy as np

from ...ir import Graph, Operation, Variable
from ..base import Pass, PassResult
from .channels import grouped
from .float_peaks import FloatPeaks
from .layers import weight_input
from .options import check, number, positive_int
from .outliers import ratio

WHERE = "accuracy.channel_split"


class ChannelSplit(Pass):
    """Options: ``min_ratio`` (layers whose input's largest channel is at least this many times the median),
    ``ratio`` (split channels above this many times the median), ``max_growth`` (extra input channels per layer,
    as a share of its input channels), ``max_error_ratio`` (split only where the estimated input rounding error
    falls at least to this share), ``op_types``, ``samples``."""

    name = "ChannelSplit"

    def __init__(self, data, *, min_ratio: float = 8.0, ratio: float = 4.0, max_growth: float = 0.05,
                 max_error_ratio: float = 0.5, op_types: list[str] | tuple[str, ...] = ("MatMul", "Gemm"),
                 samples: int = 16, device: str = "cpu", float_peaks: FloatPeaks | None = None) -> None:
        check(data is not None, WHERE, "data", "ChannelSplit needs calibration data")
        self.min_ratio = number(WHERE, "min_ratio", min_ratio, 1.0, math.inf)
        self.ratio = number(WHERE, "ratio", ratio, 1.0, math.inf)
        self.max_growth = number(WHERE, "max_growth", max_growth, 0.0, 1.0)
        self.max_error_ratio = number(WHERE, "max_error_ratio", max_error_ratio, 0.0, 1.0)
        check(isinstance(op_types, list | tuple) and all(t in ("MatMul", "Gemm") for t in op_types), WHERE,
              "op_types", f"must be a list of \"MatMul\" and \"Gemm\", got {op_types!r}")
        self.op_types = tuple(op_types)
        self.samples = positive_int(WHERE, "samples", samples)
        self.float_peaks = float_peaks or FloatPeaks(data, device)
        self.float_peaks.add_reader(self.samples, self._axes)

    def call(self, graph: Graph) -> PassResult:
        layers = [op for op in graph.topological_order() if self._splittable(op)]
        peaks = self.float_peaks.peaks(graph, self.samples, self._axes(graph), reader=self._axes)
        split, kept = [], []
        for op in layers:
            peak = peaks.get(op.inputs[0].name)
            if peak is None or peak.size < 2 or ratio(peak) < self.min_ratio:
                continue
            copies = self._copies(peak)
            if copies.max() == 1:
                continue
            entry = {"op": op.name, "outlier_ratio": ratio(peak), "channels": len(peak),
                     "extra_channels": int((copies - 1).sum()),
                     "error_ratio": _error(op, peak, copies) / _error(op, peak, np.ones_like(copies))}
            if entry["error_ratio"] > self.max_error_ratio:
                kept.append({**entry, "reason": f"estimated input error x{entry['error_ratio']:.2f}, "
                                                f"above max_error_ratio {self.max_error_ratio:g}"})
                continue
            split.append({**entry, "by": _split(graph, op, copies)})
        return PassResult(graph, bool(split), {"split": split, "not_split": kept})

    def _axes(self, graph: Graph) -> dict[str, int]:
        """The input channel axis of every layer this pass may split, by input name."""
        return {op.inputs[0].name: (-1 if op.op_type == "MatMul" else 1)
                for op in graph.operations.values() if self._splittable(op)}

    def _splittable(self, op: Operation) -> bool:
        if op.op_type not in self.op_types or weight_input(op) is None or op.inputs[1].value.ndim != 2:
            return False
        return op.op_type == "MatMul" or not op.attributes.get("transA", 0)

    def _copies(self, peak: np.ndarray) -> np.ndarray:
        """How many channels each input channel becomes: every channel within one limit, the smallest limit of at
        least ``ratio`` times the median that ``max_growth`` affords (copies of one channel round alike, so a
        channel split ``k`` ways gains only where the range shrinks about ``k``-fold: no channel is left above)."""
        budget = int(self.max_growth * len(peak))

        def copies(limit: float) -> np.ndarray:
            return np.maximum(np.ceil(peak / limit), 1).astype(np.int64)

        low, high = self.ratio * float(np.median(peak)), float(peak.max())
        if low <= 0.0 or low >= high:
            return np.ones(len(peak), np.int64)
        if (copies(low) - 1).sum() <= budget:
            return copies(low)
        for _ in range(50):  # bisection on the limit: the extra channels only fall as it rises
            middle = (low + high) / 2
            low, high = (low, middle) if (copies(middle) - 1).sum() <= budget else (middle, high)
        return copies(high)


def _error(op: Operation, peak: np.ndarray, copies: np.ndarray) -> float:
    """The layer's output error from rounding its input to 8 bits over one per-tensor range, estimated from the
    channel peaks: each channel's rounding error (at most its own peak), times its ``k`` copies (they round
    alike), weighted by the squared norm of the weight row that reads it."""
    rows = np.square(grouped(op, op.inputs[1].value).astype(np.float64)).sum(axis=(1, 3)).reshape(-1)
    step = float((peak / copies).max()) / 255.0
    return float(np.sum(rows * np.square(copies * np.minimum(step, peak / copies))))


def _split(graph: Graph, op: Operation, copies: np.ndarray) -> str:
    """Gather the copies of ``op``'s input, divide them, repeat the weight's rows; how the division was done."""
    x = op.inputs[0]
    index = np.concatenate([np.arange(len(copies)), np.repeat(np.arange(len(copies)), copies - 1)])
    divisor = copies.astype(np.float64)
    weight = op.inputs[1].value
    rows = weight[:, index] if op.op_type == "Gemm" and op.attributes.get("transB", 0) else weight[index]
    new_weight = graph.set_parameter_value(op, 1, rows)
    new_weight.shape = list(rows.shape)
    axis = -1 if op.op_type == "MatMul" else 1
    dtype = x.dtype if x.dtype is not None else np.dtype(np.float32)
    folded = _fold_into_mul(graph, x, op, divisor)
    indices = graph.add_variable(graph.unique_name(f"{op.name}_split_channels"), index.astype(np.int64))
    gathered = graph.add_variable(graph.unique_name(f"{x.name}_split"), dtype=dtype)
    graph.add_operation("Gather", [x, indices], [gathered], name=f"{op.name}_split", attributes={"axis": axis})
    source = gathered
    if folded is None:
        factor = graph.add_variable(graph.unique_name(f"{op.name}_split_factor"),
                                    (1.0 / divisor[index]).astype(dtype))
        source = graph.add_variable(graph.unique_name(f"{x.name}_split_scaled"), dtype=dtype)
        graph.add_operation("Mul", [gathered, factor], [source], name=f"{op.name}_split_scale")
        folded = "Mul after the Gather"
    graph.set_input(op, 0, source)
    return folded


def _fold_into_mul(graph: Graph, x: Variable, op: Operation, divisor: np.ndarray) -> str | None:
    """Divide channel ``j`` of ``x`` by ``divisor[j]`` in the constant of the Mul producing it, when ``op`` alone
    reads ``x`` and the constant is a scalar or one value per last-axis channel; where, or None."""
    mul = x.producer
    if mul is None or mul.op_type != "Mul" or set(x.consumers) != {op} or x in graph.outputs:
        return None
    constant = [i for i, v in enumerate(mul.inputs) if v is not None and v.is_parameter]
    if len(constant) != 1:
        return None
    value = mul.inputs[constant[0]].value
    if not (value.size == 1 or value.shape[-1:] == divisor.shape and value.size == divisor.size):
        return None
    scaled = (value.reshape(-1) / divisor).astype(value.dtype)
    new = graph.set_parameter_value(mul, constant[0], scaled)
    new.shape = list(scaled.shape)
    return f"Mul {mul.name}"
