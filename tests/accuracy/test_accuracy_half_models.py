"""Accuracy passes on float16 and bfloat16 models (float32 calibration data, cast as read): each ran into a torch
dtype its code did not expect. Bias correction and GPTQ made no torch tensor of a bfloat16 weight (TypeError:
can't convert np.ndarray of type ml_dtypes.bfloat16); AWQ's inserted Mul held float32 scales, so the next layer
met a float32 activation beside its half weight (expected m1 and m2 to have the same dtype)."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
import torch
from torch import nn

CASES = {"BiasCorrection": (None, {"bias_correction": True}),
         "GPTQ": ("int4-weight-only", {"gptq": True}),
         "AWQ": ("int4-weight-only", {"awq": True})}


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def model(request, tmp_path_factory):
    """Linear -> ReLU -> Linear: the second layer's input has no LayerNormalization or Mul to fold AWQ's scales
    into, so AWQ inserts a Mul."""
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).to(request.param)
    path = tmp_path_factory.mktemp("half") / "mlp.onnx"
    torch.onnx.export(mlp.eval(), (torch.zeros(1, 64, dtype=request.param),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


@pytest.mark.parametrize("name", CASES)
def test_the_pass_runs_and_changes_the_model(model, name, tmp_path):
    preset, accuracy = CASES[name]
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((8, 64)).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(model, "onnxruntime", calib, preset=preset, accuracy=accuracy, output=tmp_path / "q.onnx")
    assert next(run for run in result.pass_runs if run.name == name).modified
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 15
