"""CrossLayerEqualization: equal per-channel weight ranges across two layers joined by a ReLU-like op.

For a pair ``first -> [act] -> second`` where ``act(s x) = s act(x)`` for
``s > 0`` (Relu, LeakyRelu, PRelu, Clip with min 0 and no max), output channel
``i`` of ``first`` (weights and bias) is divided by ``s_i`` and input channel
``i`` of ``second`` multiplied by it, with ``s_i = sqrt(r1_i / r2_i)`` so that
both ranges become ``sqrt(r1_i * r2_i)``. The float function is unchanged.
Chains (Conv -> depthwise Conv -> Conv) are swept until the scales settle; the
sweeps update per-channel factors from the weights' peaks, and each weight is
scaled once at the end.
Runs on the float graph, after GraphSimplify (BatchNormalization folded).
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from ...ir import Graph, Operation, Variable
from ...ops import bias_index, out_channels
from ..base import Pass, PassResult
from .channels import CHANNEL_TYPES, grouped, in_channels, ungrouped
from .layers import bias_of, weight_input
from .options import number, positive_int

HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")
BLOCK = 1 << 18  # weight elements one step of the sweeps' and the scaling's products holds (2 MiB in float64): an
# 8192x8192 MatMul chain took 65 s in temporaries the size of each weight, 160 of them a sweep of 8 pairs


class CrossLayerEqualization(Pass):
    """Options: ``iterations`` (sweeps over all pairs at most), ``tolerance`` (stop when every
    ``|log s_i|`` of a sweep is below it)."""

    name = "CrossLayerEqualization"

    def __init__(self, *, iterations: int = 20, tolerance: float = 1e-3) -> None:
        self.iterations = positive_int("accuracy.equalization", "iterations", iterations)
        self.tolerance = number("accuracy.equalization", "tolerance", tolerance, 0.0, 1.0)

    def call(self, graph: Graph) -> PassResult:
        pairs = find_pairs(graph)
        layers = _channel_factors(pairs)
        sweeps, change = 0, np.inf
        total = [np.ones(1) for _ in pairs]  # each pair's scales, multiplied over the sweeps
        while pairs and sweeps < self.iterations and change >= self.tolerance:
            applied = [_equalize(layers[first.name], layers[second.name]) for first, second in pairs]
            total = [t * s for t, s in zip(total, applied, strict=True)]
            change = max(float(np.abs(np.log(s)).max(initial=0.0)) for s in applied)
            sweeps += 1
        for factors in layers.values():
            factors.apply(graph)
        names = [f"{a.name} -> {b.name}" for a, b in pairs]
        scales = {name: {"min": float(t.min()), "max": float(t.max()), "channels": t.size}
                  for name, t in zip(names, total, strict=True)}
        return PassResult(graph, bool(pairs), {"pairs": names, "sweeps": sweeps, "scales": scales})


def find_pairs(graph: Graph) -> list[tuple[Operation, Operation]]:
    """Every (first, second) layer pair joined by at most a bias Add and one ReLU-like op."""
    pairs = []
    for op in graph.topological_order():
        if _equalizable(op) and (bias_index(op) is None or bias_of(graph, op) is not None):
            second = _next_layer(graph, op)
            if second is not None:
                pairs.append((op, second))
    return pairs


def _equalizable(op: Operation) -> bool:
    """A layer of a channel type with a constant weight (2-D for MatMul) in float32 or float64: a half-precision
    weight would be rounded again (the function changes) for layers that runtimes keep in float anyway."""
    if op.op_type not in CHANNEL_TYPES or weight_input(op) is None:
        return False
    if op.inputs[1].value.dtype not in (np.float32, np.float64):
        return False
    return op.op_type != "MatMul" or op.inputs[1].value.ndim == 2


def _next_layer(graph: Graph, first: Operation) -> Operation | None:
    var = first.outputs[0]
    bias = bias_of(graph, first)
    if bias is not None and bias.holder is not first:
        var = bias.holder.outputs[0]
    reader = _sole_reader(graph, var)
    if reader is not None and _is_homogeneous(reader):
        var, reader = reader.outputs[0], _sole_reader(graph, reader.outputs[0])
    if reader is None or not _equalizable(reader) or reader.inputs[0] is not var:
        return None
    if (reader.op_type == "Conv") != (first.op_type == "Conv"):
        return None
    weight = reader.inputs[1].value
    return reader if in_channels(reader, weight) == out_channels(first) else None


def _sole_reader(graph: Graph, var: Variable) -> Operation | None:
    readers = set(map(id, var.consumers))
    return var.consumers[0] if len(readers) == 1 and var not in graph.outputs else None


def _is_homogeneous(op: Operation) -> bool:
    """act(s x) = s act(x) for every s > 0."""
    if op.op_type in HOMOGENEOUS:
        return op.inputs[0] is not None and all(v is None or v.is_parameter for v in op.inputs[1:])
    if op.op_type != "Clip":
        return False
    low = op.inputs[1] if len(op.inputs) > 1 else None
    high = op.inputs[2] if len(op.inputs) > 2 else None
    if "min" in op.attributes or "max" in op.attributes:  # opset < 11
        return op.attributes.get("min") == 0.0 and op.attributes.get("max", np.inf) >= np.finfo(np.float32).max
    return (low is not None and low.is_parameter and low.value.size == 1 and float(low.value.reshape(-1)[0]) == 0.0
            and high is None)


class _ChannelFactors:
    """A layer's pending channel scaling: weight output channel ``o``, input channel ``i`` times ``out[o] * inp[i]``.

    The sweeps change only these factors; the ranges they need come from ``peaks``, the weight's max ``|w|`` per
    (output, input) channel pair in the grouped view ``(groups, out/g, in/g)``, reduced over the axis whose factors
    stay 1 (the inputs of a layer that is never a pair's second, the outputs of one never a pair's first).
    """

    def __init__(self, op: Operation, *, scales_out: bool, scales_in: bool) -> None:
        peaks = _kernel_peaks(grouped(op, op.inputs[1].value))
        if not scales_in:
            peaks = peaks.max(axis=2, keepdims=True)
        if not scales_out:
            peaks = peaks.max(axis=1, keepdims=True)
        self.op, self.peaks, self.scales_out = op, peaks, scales_out
        self.out = np.ones(peaks.shape[:2])
        self.inp = np.ones((peaks.shape[0], peaks.shape[2]))

    def out_ranges(self) -> np.ndarray:
        """max |w| per output channel of the scaled weight."""
        maxima = np.empty(self.out.shape)
        for rows in _row_blocks(self.peaks.shape):
            np.max(self.peaks[:, rows] * self.inp[:, None, :], axis=2, out=maxima[:, rows])
        return (self.out * maxima).reshape(-1)

    def in_ranges(self) -> np.ndarray:
        """max |w| per input channel of the scaled weight."""
        maxima = np.zeros(self.inp.shape)  # peaks are magnitudes
        for rows in _row_blocks(self.peaks.shape):
            np.maximum(maxima, (self.peaks[:, rows] * self.out[:, rows, None]).max(axis=1), out=maxima)
        return (self.inp * maxima).reshape(-1)

    def apply(self, graph: Graph) -> None:
        """Scale the weight (and the bias of a pair's first layer) by the factors, rounding once."""
        op = self.op
        weight = op.inputs[1].value
        view = grouped(op, weight)  # multiplied in float64 a block at a time, written in the weight's dtype
        scaled = np.empty(view.shape, weight.dtype)
        for rows in _row_blocks(view.shape):
            out = self.out[:, rows] if self.out.shape[1] > 1 else self.out  # one factor: a layer's outputs unscaled
            factors = (out[:, :, None] * self.inp[:, None, :])[..., None]
            scaled[:, rows] = view[:, rows].astype(np.float64) * factors
        graph.set_parameter_value(op, 1, ungrouped(op, scaled, weight))
        bias = bias_of(graph, op)
        if bias is not None and self.scales_out:
            value = bias.var.value
            graph.set_parameter_value(bias.holder, bias.index, value * self.out.reshape(value.shape))


def _row_blocks(shape: tuple[int, ...]) -> list[slice]:
    """Slices of axis 1 (output channels) of a grouped array of ``shape`` holding about ``BLOCK`` elements each."""
    step = max(1, BLOCK // max(1, math.prod(shape) // max(shape[1], 1)))
    return [slice(begin, begin + step) for begin in range(0, shape[1], step)]


def _kernel_peaks(view: np.ndarray) -> np.ndarray:
    """max |w| over a grouped view's last axis (the kernel positions), in the weight's type (they are its values);
    an elementwise max of the positions' slices, as numpy reduces a short last axis slowly."""
    magnitudes = np.abs(view)
    return np.ascontiguousarray(reduce(np.maximum, (magnitudes[..., k] for k in range(view.shape[3]))))


def _channel_factors(pairs: list[tuple[Operation, Operation]]) -> dict[str, _ChannelFactors]:
    """Each paired layer's factors by op name, told which of its channel axes the pairs scale."""
    firsts, seconds = {a.name for a, _ in pairs}, {b.name for _, b in pairs}
    layers = {}
    for op in (op for pair in pairs for op in pair):
        if op.name not in layers:
            layers[op.name] = _ChannelFactors(op, scales_out=op.name in firsts, scales_in=op.name in seconds)
    return layers


def _equalize(first: _ChannelFactors, second: _ChannelFactors) -> np.ndarray:
    """Equalize one pair's ranges; the scales s_i applied (the second layer's input channels times s_i)."""
    r1, r2 = first.out_ranges(), second.in_ranges()
    usable = (r1 > 0) & (r2 > 0)
    scales = np.where(usable, np.sqrt(np.where(usable, r1, 1.0) / np.where(usable, r2, 1.0)), 1.0)
    first.out /= scales.reshape(first.out.shape)
    second.inp *= scales.reshape(second.inp.shape)
    return scales
