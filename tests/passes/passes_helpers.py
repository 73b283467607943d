"""Helpers of the pass tests: models from torch or onnx.helper, pass runs, simulated outputs."""

from __future__ import annotations

import numpy as np
import onnx
import qtool
import torch
from onnx import TensorProto, helper, numpy_helper
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto
from qtool.passes import Pass, PassManager
from qtool.passes.order import default_passes

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


def random_samples(shape, count: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def passes_until(config, samples, last: str = "Baking") -> list[Pass]:
    """The default order up to and including the pass named ``last``."""
    passes = default_passes(config, samples)
    names = [p.label for p in passes]
    return passes[:names.index(last) + 1]


def outputs(graph, samples, quantize: bool = True) -> np.ndarray:
    """The first graph output over ``samples``, stacked; simulated quantization unless ``quantize`` is False."""
    executor = TorchExecutor(graph)
    executor.quantize = quantize
    return np.stack([executor.forward(s)[0] for s in samples])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))
