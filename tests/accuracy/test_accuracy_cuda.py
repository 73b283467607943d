"""The accuracy passes on CUDA give what they give on the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from accuracy_helpers import digits, export, ort_outputs, outputs, quantize, snr_db
from qtool.passes.accuracy import accuracy_passes
from torch import nn

OPTIONS = {"equalization": True, "fallback": {"min_snr_db": 20}, "adaround": {"iterations": 50},
           "bias_correction": True}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_result_on_cuda(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    calib, test = digits(0, 64), digits(500, 128)
    snr = {}
    for device in ("cpu", "cuda"):
        graph = export(model, torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
        reference = ort_outputs(graph, test)
        before, after = accuracy_passes(OPTIONS, device, data=calib)
        quantize(graph, {"preset": "w4a8"}, calib, before=before, after=after)
        snr[device] = snr_db(outputs(graph, test), reference)
    assert abs(snr["cuda"] - snr["cpu"]) < 1.0, snr
