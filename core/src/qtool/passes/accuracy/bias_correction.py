"""BiasCorrection: remove the mean output shift of quantized layers, per output channel.

For every quantized layer with a bias (Conv, ConvTranspose, Gemm, or MatMul
followed by a bias Add), the mean of its output per channel in the float graph
is compared with the mean of its quantized output, and the difference
``E[y_q - y]`` is subtracted from the float bias (an int32 bias follows
through its passive rule). ``inputs`` says where ``y_q`` comes from:

* ``"quantized"`` (default): the simulated graph up to the layer, with the
  layers before it already corrected, so that shifts carried from upstream
  (through a ReLU, say) are removed too; one run over the samples per layer;
* ``"float"``: the layer alone on float inputs with its weight quantized (the
  shift due to its own weight only); one run for all layers.

``y_q`` is taken before the output's own quantization. Runs after
calibration, after AdaRound when both are on (it then corrects the learned
rounding against the float weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ...executor import TorchExecutor
from ...executor.feeds import to_tensor
from ...ir import Graph, Operation
from ...ops import output_channel_axis
from ...quant import QuantizationState
from ..baking import bake_value
from ..base import Pass, PassResult
from .layers import bias_of, run_op, weight_input
from .options import check, positive_int
from .running import run_watching, take_samples

WHERE = "accuracy.bias_correction"


class BiasCorrection(Pass):
    """Options: ``inputs`` ("quantized" or "float"), ``samples`` (calibration samples used)."""

    name = "BiasCorrection"
    changes_float_function = True  # the float biases move: the user's model stays the reference

    def __init__(self, data, *, inputs: str = "quantized", samples: int = 128, device: str = "cpu") -> None:
        check(data is not None, WHERE, "data", "BiasCorrection needs calibration data")
        check(inputs in ("quantized", "float"), WHERE, "inputs", f"must be \"quantized\" or \"float\", got {inputs!r}")
        self.data, self.device, self.inputs = data, device, inputs
        self.samples = positive_int(WHERE, "samples", samples)

    def call(self, graph: Graph) -> PassResult:
        layers, skipped = [], []
        for op in quantized_layers(graph):
            if bias_of(graph, op) is None:
                skipped.append({"op": op.name, "reason": "no bias with one value per output channel"})
            else:
                layers.append(op)
        corrected = self._correct(graph, layers) if layers else []
        return PassResult(graph, bool(corrected), {"corrected": corrected, "skipped": skipped})

    def _correct(self, graph: Graph, layers: list[Operation]) -> list[dict]:
        executor = TorchExecutor(graph, self.device)
        batches = take_samples(graph, self.data, self.samples)
        weights = {op.name: to_tensor(quantized_weight(op), executor.device) for op in layers}
        float_means = _channel_means(graph, executor, batches, layers, quantize=False)
        if self.inputs == "float":
            weight_means = _channel_means(graph, executor, batches, layers, quantize=False, weights=weights)
        if self.inputs == "float":
            return [_apply(graph, op, weight_means[op.name] - float_means[op.name]) for op in layers]
        corrected = []
        for op in layers:
            executor.refresh()
            quantized = _channel_means(graph, executor, batches, [op], quantize=True)[op.name]
            corrected.append(_apply(graph, op, quantized - float_means[op.name]))
        return corrected


def _channel_means(graph: Graph, executor: TorchExecutor, batches, layers: list[Operation], *, quantize: bool,
                   weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Mean per output channel of each layer's output before output quantization (weights replaced if given)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def measure(op, inputs, outputs) -> None:
        args = list(inputs)
        if weights is not None:
            args[weight_input(op)] = weights[op.name].to(inputs[0].dtype)
        y = run_op(graph, op, args, executor.device)[0].double()
        axis = output_channel_axis(op) % y.dim()
        rows = y.movedim(axis, 0).reshape(y.shape[axis], -1)
        sums[op.name] = sums.get(op.name, 0) + rows.sum(dim=1)
        counts[op.name] = counts.get(op.name, 0) + rows.shape[1]

    run_watching(executor, batches, layers, measure, quantize=quantize)
    return {name: (total / counts[name]).cpu().numpy() for name, total in sums.items()}


def _apply(graph: Graph, op: Operation, shift: np.ndarray) -> dict:
    bias = bias_of(graph, op)
    value = bias.var.value
    var = graph.set_parameter_value(bias.holder, bias.index,
                            value.astype(np.float64) - (shift / bias.factor).reshape(value.shape))
    return {"op": op.name, "bias": var.name, "largest_shift": float(np.abs(shift).max())}


def quantized_layers(graph: Graph) -> list[Operation]:
    """Quantized layers whose constant weight is quantized with known parameters, in topological order."""
    found = []
    for op in graph.topological_order():
        index = weight_input(op)
        if index is None or op.quant is None or not op.quant.quantized:
            continue
        tqc = op.quant.inputs[index]
        if tqc is not None and tqc.is_settled:
            found.append(op)
    return found


def quantized_weight(op: Operation) -> np.ndarray:
    """The weight as the simulated graph uses it: stored values when baked, else fake-quantized float values."""
    var, tqc = op.inputs[weight_input(op)], op.quant.inputs[weight_input(op)]
    return np.asarray(var.value) if tqc.state is QuantizationState.BAKED else bake_value(var.value, tqc)
