"""SmoothQuant: move activation outliers into the weights of the MatMul/Gemm layers that read them.

For a tensor X read only by layers ``X @ W`` (MatMul, or Gemm without transA,
with constant 2-D weights), input channel ``j`` gets
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (``max|W_j|`` over every
reader), X is divided by ``s`` and each W's input row ``j`` multiplied by it.
The division is folded into X's producer: the scale and bias of a
LayerNormalization over the last axis, or the constant of a Mul; with
``insert_mul`` a Mul is inserted where there is no such producer (keep it
float, e.g. with ``dispatch.exclude``, or X is quantized before it).
``max|X_j|`` comes from running the float graph over calibration samples.
The float function is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...executor import TorchExecutor
from ...ir import Graph, Operation, Variable
from ...ops import reads_shape_only
from ..base import Pass, PassResult
from .channels import in_ranges, scale_in
from .layers import weight_input
from .options import check, number, positive_int
from .running import run_watching, take_samples

WHERE = "accuracy.smoothquant"


@dataclass
class _Target:
    """A tensor and the layers reading it, with its per-channel absmax over the samples."""

    var: Variable
    layers: list[Operation]
    absmax: torch.Tensor | None = None
    rank: int = 0


class SmoothQuant(Pass):
    """Options: ``alpha`` (migration strength, 0..1), ``insert_mul``, ``samples`` (calibration samples used)."""

    name = "SmoothQuant"

    def __init__(self, data, *, alpha: float = 0.5, insert_mul: bool = False, samples: int = 128,
                 device: str = "cpu") -> None:
        check(data is not None, WHERE, "data", "SmoothQuant needs calibration data")
        self.data, self.device = data, device
        self.alpha = number(WHERE, "alpha", alpha, 0.0, 1.0)
        check(isinstance(insert_mul, bool), WHERE, "insert_mul", f"must be true or false, got {insert_mul!r}")
        self.insert_mul = insert_mul
        self.samples = positive_int(WHERE, "samples", samples)

    def call(self, graph: Graph) -> PassResult:
        targets = _targets(graph)
        if targets:
            self._measure(graph, targets)
        smoothed, skipped = [], []
        for target in targets:
            where = self._fold(graph, target)
            entry = {"tensor": target.var.name, "layers": [op.name for op in target.layers]}
            if where.startswith("skipped"):
                skipped.append({**entry, "reason": where})
            else:
                smoothed.append({**entry, "into": where})
        return PassResult(graph, bool(smoothed), {"smoothed": smoothed, "skipped": skipped})

    def _measure(self, graph: Graph, targets: list[_Target]) -> None:
        by_layer = {op.name: target for target in targets for op in target.layers[:1]}

        def observe(op, inputs, outputs) -> None:
            target = by_layer[op.name]
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0).double()
            target.absmax = x if target.absmax is None else torch.maximum(target.absmax, x)
            target.rank = inputs[0].dim()

        executor = TorchExecutor(graph, self.device)
        run_watching(executor, take_samples(graph, self.data, self.samples),
                     [graph.operations[name] for name in by_layer], observe, quantize=False)

    def _fold(self, graph: Graph, target: _Target) -> str:
        """Apply the scales; where they went, or 'skipped: why'."""
        producer = target.var.producer
        folds = {"LayerNormalization": _into_layernorm, "Mul": _into_mul}
        fold = folds.get(producer.op_type) if producer is not None else None
        if fold is None and not self.insert_mul:
            return "skipped: no LayerNormalization or constant Mul produces it (insert_mul is off)"
        scales = self._scales(target)
        where = fold(graph, producer, target, scales) if fold is not None else "skipped"
        if where.startswith("skipped") and self.insert_mul:  # e.g. a SwiGLU's act(gate) * up: no constant
            where = _insert_mul(graph, target, scales)
        if not where.startswith("skipped"):
            for layer in target.layers:
                graph.set_parameter_value(layer, 1, scale_in(layer, layer.inputs[1].value, scales))
        return where

    def _scales(self, target: _Target) -> np.ndarray:
        x = target.absmax.cpu().numpy()
        w = np.max([in_ranges(op, op.inputs[1].value) for op in target.layers], axis=0).astype(np.float64)
        usable = (x > 0) & (w > 0)
        safe_x, safe_w = np.where(usable, x, 1.0), np.where(usable, w, 1.0)
        return np.where(usable, safe_x**self.alpha / safe_w ** (1.0 - self.alpha), 1.0)


def _targets(graph: Graph) -> list[_Target]:
    """Activations read only (as data) by layers with constant 2-D weights, and not graph outputs; a reader of its
    shape alone (a Shape a TorchScript decoder takes of each attention input) reads the same shape after X / s."""
    targets = []
    for var in graph.variables.values():
        readers = [op for op in {id(op): op for op in var.consumers}.values() if not _shape_reader(op, var)]
        if var.is_parameter or not readers or var in graph.outputs:
            continue
        if all(_smoothable(op, var) for op in readers):
            targets.append(_Target(var, readers))
    return targets


def _shape_reader(op: Operation, var: Variable) -> bool:
    return all(reads_shape_only(op, i) for i, v in enumerate(op.inputs) if v is var)


def _smoothable(op: Operation, var: Variable) -> bool:
    if op.op_type not in ("MatMul", "Gemm") or weight_input(op) is None or op.inputs[0] is not var:
        return False
    return op.inputs[1].value.ndim == 2 and op.inputs.count(var) == 1


def _into_layernorm(graph: Graph, norm: Operation, target: _Target, scales: np.ndarray) -> str:
    axis = norm.attributes.get("axis", -1)
    if axis not in (-1, target.rank - 1) or norm.outputs[0] is not target.var:
        return "skipped: the LayerNormalization does not normalize over the last axis only"
    for index in (1, 2):
        var = norm.inputs[index] if index < len(norm.inputs) else None
        if var is None:
            continue
        if not var.is_parameter or var.value.shape[-1:] != scales.shape:
            return f"skipped: {norm.name}'s input {index} is not a constant per channel"
    for index in (1, 2):
        if index < len(norm.inputs) and norm.inputs[index] is not None:
            graph.set_parameter_value(norm, index, norm.inputs[index].value / scales)
    return f"{norm.op_type} {norm.name}"


def _into_mul(graph: Graph, mul: Operation, target: _Target, scales: np.ndarray) -> str:
    constant = [i for i, v in enumerate(mul.inputs) if v is not None and v.is_parameter]
    if len(constant) != 1:
        return f"skipped: {mul.name} has no single constant operand"
    value = mul.inputs[constant[0]].value
    per_channel = value.size == scales.size and value.shape[-1:] == scales.shape
    if not (value.size == 1 or per_channel) or value.ndim > target.rank:
        return f"skipped: {mul.name}'s constant does not broadcast along the last axis"
    graph.set_parameter_value(mul, constant[0], value / scales)
    return f"Mul {mul.name}"


def _insert_mul(graph: Graph, target: _Target, scales: np.ndarray) -> str:
    dtype = target.layers[0].inputs[1].value.dtype  # the layers' own: a float16 model's Mul is float16
    factor = graph.add_variable(graph.unique_name(f"{target.var.name}_smooth_scale"), (1.0 / scales).astype(dtype))
    op = graph.insert_after(target.var, "Mul", name=f"{target.var.name}_smooth", extra_inputs=[factor])
    return f"inserted Mul {op.name}"
