"""Fixtures of the calibration tests: a small CNN, configs attached by hand, float references from onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
import torch
from qtool.quant import OpQuantConfig, QuantScheme, TensorQuantizationConfig


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y) + y)
        return self.head(y.mean(dim=(2, 3)))


@pytest.fixture(scope="session")
def cnn_path(tmp_path_factory) -> str:
    """ONNX file of SmallCNN (input 'x': float32 [batch, 3, 12, 12])."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "cnn.onnx"
    torch.onnx.export(SmallCNN().eval(), (torch.randn(1, 3, 12, 12),), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)
    return str(path)


@pytest.fixture
def cnn(cnn_path) -> qtool.Graph:
    return qtool.load(cnn_path)


@pytest.fixture(scope="session")
def cnn_samples() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(20, 3, 12, 12)).astype(np.float32)


def attach_activation_configs(graph: qtool.Graph, scheme: QuantScheme) -> dict[str, TensorQuantizationConfig]:
    """Give every op an INITIAL activation config on each non-parameter input and each output.

    Returns the configs by tensor name at the producer (graph inputs: at their first reader).
    """
    first: dict[str, TensorQuantizationConfig] = {}
    for op in graph.topological_order():
        inputs = [None if v is None or v.is_parameter else TensorQuantizationConfig(scheme) for v in op.inputs]
        outputs = [TensorQuantizationConfig(scheme) for _ in op.outputs]
        op.quant = OpQuantConfig(inputs, outputs, quantized=True, reason="test")
        for var, tqc in zip((*op.outputs, *op.inputs), (*outputs, *inputs), strict=True):
            if var is not None and tqc is not None:
                first.setdefault(var.name, tqc)
    return first


def float_activations(model_path: str, samples: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Every named tensor over all samples, from onnxruntime (float, one run per sample)."""
    model = onnx.load(model_path)
    graph_outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in graph_outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    runs = [session.run(wanted, {"x": s[None]}) for s in samples]
    return {name: np.stack([r[i] for r in runs]) for i, name in enumerate(wanted)}


@pytest.fixture
def attach():
    return attach_activation_configs


@pytest.fixture
def ort_activations():
    return float_activations
