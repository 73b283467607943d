"""Helpers of the pipeline tests: the small CNN, an onnxruntime run, and an in-process platform."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import qtool
import torch

TINY = "tiny-test"


class SmallCnn(torch.nn.Module):
    """Conv + BatchNorm + Relu, MaxPool, Conv + Relu, Reshape, Linear: every default pass has work."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        y = torch.relu(self.conv2(y))
        return self.fc(y.reshape(y.shape[0], -1))  # a shape subgraph that stays float


def run_model(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


class TinyPlatform(qtool.Platform):
    """Exports the simulated graph as float ONNX (baked weights); reports ERROR for ops named in ``refuse``."""

    name = TINY
    description = "in-test platform"
    output_format = "onnx (float, baked weights)"
    refuse: tuple[str, ...] = ()

    def default_config(self):
        return {"activation": {"symmetric": False, "quant_min": -128, "quant_max": 127}}

    def validate(self, graph, options=None):
        return [qtool.Diagnostic(qtool.Severity.ERROR, "tiny.refused", "this op cannot run here", op=op.name)
                for op in graph.operations.values() if op.op_type in self.refuse]

    def export(self, graph, output, options):
        return [qtool.save(graph, output)]

    def agreement(self, graph, paths, samples, simulated):
        ours = [run_model(paths[0], s["x"]) for s in samples]
        return {"samples": len(samples),
                "max_abs": float(max(np.abs(a - b[0]).max() for a, b in zip(ours, simulated, strict=True)))}
