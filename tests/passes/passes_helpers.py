"""Helpers of the pass tests: models from torch or onnx.helper, pass runs, a float-range stand-in calibration."""

from __future__ import annotations

import numpy as np
import onnx
import qtool
import torch
from onnx import TensorProto, helper, numpy_helper
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto
from qtool.passes import Pass, PassManager, PassResult
from qtool.passes.order import default_passes
from qtool.quant import QuantizationState, compute_scale_offset

ASYM_INT8 = {"symmetric": False, "quant_min": -128, "quant_max": 127}


def export(module: torch.nn.Module, example: torch.Tensor, path) -> qtool.Graph:
    """torch -> ONNX (TorchScript exporter, dynamic batch) -> Graph."""
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return qtool.load(path)


def graph_of(nodes, inputs, outputs, initializers, opset: int = 17) -> qtool.Graph:
    """A Graph from onnx.helper parts (outputs may leave their shape unknown)."""
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    return from_model_proto(model)


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def run(passes, graph: qtool.Graph):
    """Run passes in order; the PassRuns by name."""
    return {r.name: r for r in PassManager(passes).run(graph)}


def float_ranges(graph: qtool.Graph, samples: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Min and max of every tensor over a float run of ``samples``."""
    executor = TorchExecutor(graph)
    executor.quantize = False
    seen: dict[str, tuple[float, float]] = {}

    def hook(op, inputs, outputs):
        for var, t in zip((*op.inputs, *op.outputs), (*inputs, *outputs), strict=False):
            if var is not None and t is not None and t.is_floating_point():
                lo, hi = seen.get(var.name, (np.inf, -np.inf))
                seen[var.name] = (min(lo, float(t.min())), max(hi, float(t.max())))

    handle = executor.add_hook(hook)
    for sample in samples:
        executor.forward(sample)
    handle.remove()
    return seen


def calibrate_from_ranges(graph: qtool.Graph, samples) -> None:
    """Settle every root activation config from a float run (a stand-in for the calibration pass)."""
    ranges = float_ranges(graph, samples)
    for op in graph.operations.values():
        if op.quant is None:
            continue
        for var, tqc in zip((*op.inputs, *op.outputs), (*op.quant.inputs, *op.quant.outputs), strict=False):
            if tqc is not None and tqc.state is QuantizationState.INITIAL and not tqc.is_overlapped:
                tqc.set_params(*compute_scale_offset(tqc.scheme, *ranges[var.name]))


def random_samples(shape, count: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def configs_of(op) -> list:
    return [*op.quant.inputs, *op.quant.outputs]


class RangeCalibration(Pass):
    """The calibration step from a float run's min/max (keeps these tests independent of the observers)."""

    name = "RuntimeCalibration"

    def __init__(self, samples) -> None:
        self.samples = samples

    def call(self, graph):
        calibrate_from_ranges(graph, self.samples)
        return PassResult(graph, True)


def passes_until(config, samples, last: str = "Baking") -> list[Pass]:
    """The default order up to and including the pass named ``last``."""
    passes = default_passes(config, calibration=RangeCalibration(samples))
    names = [p.label for p in passes]
    return passes[:names.index(last) + 1]


def outputs(graph, samples, quantize: bool = True) -> np.ndarray:
    """The first graph output over ``samples``, stacked; simulated quantization unless ``quantize`` is False."""
    executor = TorchExecutor(graph)
    executor.quantize = quantize
    return np.stack([executor.forward(s)[0] for s in samples])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))
