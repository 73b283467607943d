"""SmoothQuant: exact in float (checked with onnxruntime); outlier channels stop ruining int8 activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accuracy_helpers import export, ort_outputs, outputs, quantize, samples, snr_db
from qtool.passes.accuracy.options import AccuracyError
from qtool.passes.accuracy.smoothquant import SmoothQuant
from torch import nn

ONLY_MATMUL = {"dispatch": {"quantize_op_types": ["MatMul"]}}  # int8 per-tensor activations


class Outliers(nn.Module):
    """LayerNorm whose scale makes channels 3 and 10 outliers, read by Linear layers that damp them."""

    def __init__(self, heads: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(16)
        self.heads = nn.ModuleList(nn.Linear(16, 12) for _ in range(heads))
        with torch.no_grad():
            self.norm.weight[:] = torch.linspace(0.5, 1.5, 16)
            self.norm.weight[3], self.norm.weight[10] = 60.0, -40.0
            self.norm.bias[7] = 5.0
            for head in self.heads:
                head.weight[:, 3] /= 60.0
                head.weight[:, 10] /= 40.0

    def forward(self, x):
        h = self.norm(x)
        out = self.heads[0](h)
        for head in self.heads[1:]:
            out = out * head(h)
        return out


@pytest.fixture
def data():
    return samples((8, 16), 64)


def test_folds_into_layernorm_exactly(tmp_path, data):
    graph = export(Outliers(heads=2), torch.zeros(1, 8, 16), tmp_path / "m.onnx")
    want = ort_outputs(graph, data)
    result = SmoothQuant(data)(graph)
    [smoothed] = result.details["smoothed"]
    assert smoothed["into"].startswith("LayerNormalization") and len(smoothed["layers"]) == 2
    got = ort_outputs(graph, data)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_int8_activation_error_drops(tmp_path, data):
    snr = {}
    for smooth in (False, True):
        graph = export(Outliers(), torch.zeros(1, 8, 16), tmp_path / "m.onnx")
        reference = ort_outputs(graph, data)
        quantize(graph, ONLY_MATMUL, data, before=[SmoothQuant(data)] if smooth else [])
        snr[smooth] = snr_db(outputs(graph, data), reference)
    assert snr[False] < 15 and snr[True] > snr[False] + 20, snr  # measured 9.7 -> 39.3 dB


def _mul_model(tmp_path, constant: bool):
    """x * c -> MatMul (c constant), or x -> MatMul straight from the graph input."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.c = torch.linspace(0.5, 2.0, 16)
            self.c[5] = 50.0
            self.w = nn.Parameter(torch.randn(16, 8))

        def forward(self, x):
            return (x * self.c if constant else x) @ self.w

    return export(Scaled(), torch.zeros(1, 4, 16), tmp_path / "s.onnx")


def test_folds_into_mul_and_inserts_mul_when_asked(tmp_path):
    data = samples((4, 16), 16)
    for constant, insert in ((True, False), (False, True)):
        graph = _mul_model(tmp_path, constant)
        want = ort_outputs(graph, data)
        result = SmoothQuant(data, insert_mul=insert)(graph)
        [smoothed] = result.details["smoothed"]
        assert smoothed["into"].startswith("Mul" if constant else "inserted Mul"), smoothed
        assert np.abs(ort_outputs(graph, data) - want).max() <= 1e-4 * np.abs(want).max()


def test_skips_without_a_producer_to_fold_into(tmp_path):
    data = samples((4, 16), 16)
    graph = _mul_model(tmp_path, constant=False)
    weights = {n: v.value.copy() for n, v in graph.variables.items() if v.is_parameter}
    result = SmoothQuant(data)(graph)
    assert not result.modified and "insert_mul is off" in result.details["skipped"][0]["reason"]
    assert all(np.array_equal(graph.variables[n].value, v) for n, v in weights.items())


def test_options_checked(data):
    with pytest.raises(AccuracyError, match="accuracy.smoothquant.alpha"):
        SmoothQuant(data, alpha=1.5)
    with pytest.raises(AccuracyError, match="needs calibration data"):
        SmoothQuant(None)
