"""The w4a8 preset's sensitivity fallback: a layer that collapses at 4 bits goes back to 8, unless the user says no."""

from __future__ import annotations

import pytest
import qtool
import torch
from accuracy_helpers import export, ort_outputs, outputs, samples, snr_db
from qtool.cli.quantize import fallback_lines
from qtool.config.presets import W4_FALLBACK
from torch import nn


class Collapsing(nn.Module):
    """conv1 -> Relu -> conv2 -> Relu -> conv3; conv1's channel 5 is always ~100 and conv2 reads it through
    small weights (0.06) that round to 0 at 4 bits next to the channel's larger ones."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv1.bias[5] = 100.0
            self.conv2.weight[:, 5] = 0.06
            self.conv2.weight[:, :5] *= 3

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


@pytest.fixture
def data():
    return samples((3, 6, 6), 32)


def _quantize(tmp_path, data, config=None):
    graph = export(Collapsing(), torch.zeros(1, 3, 6, 6), tmp_path / "c.onnx")
    reference = ort_outputs(graph, data)
    result = qtool.quantize(graph, "onnxruntime", data, preset="w4a8", config=config)
    runs = {r.name: r for r in result.pass_runs}
    return result, runs, snr_db(outputs(result.graph, data), reference)


def test_the_preset_widens_the_collapsing_layer_to_8_bits(tmp_path, data):
    result, runs, snr = _quantize(tmp_path, data)
    details = runs["SensitivityFallback"].details
    assert details["met"] and details["before"] < 20 and snr > details["before"] + 15, (details, snr)  # 10.9 -> 33.8 dB
    gap = W4_FALLBACK["max_gap_db"]
    assert details["after"] >= details["widened_snr_db"] - gap and details["candidates"] == 3
    first = details["changed"][0]
    assert first["op"] == "/conv2/Conv" and first["to"] == ["conv2.weight: int8 sym per-channel(axis=0) [-128, 127]"]
    widened = {c["op"] for c in details["changed"]}
    for op in (o for o in result.graph.operations.values() if o.op_type == "Conv"):
        assert op.quant.quantized and op.quant.inputs[1].scheme.num_of_bits == (8 if op.name in widened else 4)
    lines = fallback_lines(result.pass_runs)
    assert lines[0].startswith(f"sensitivity fallback: SNR >= {details['widened_snr_db'] - gap:.4g} dB met")
    assert "/conv2/Conv -> conv2.weight: int8" in lines[1] and len(lines) == 1 + len(details["changed"])


def test_the_user_turns_the_fallback_off(tmp_path, data):
    result, runs, snr = _quantize(tmp_path, data, {"accuracy": {"fallback": False}})
    assert "SensitivityFallback" not in runs and snr < 20 and fallback_lines(result.pass_runs) == []
    assert all(op.quant.inputs[1].scheme.num_of_bits == 4
               for op in result.graph.operations.values() if op.op_type == "Conv")


def test_a_user_budget_replaces_the_presets_table(tmp_path, data):
    _, runs, _ = _quantize(tmp_path, data, {"accuracy": {"fallback": {"min_snr_db": 30}}})
    details = runs["SensitivityFallback"].details
    assert details["budget"] == "SNR >= 30 dB" and details["met"] and "widened_snr_db" not in details
    assert {c["to"] for c in details["changed"]} == {"float"}
