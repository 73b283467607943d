"""BiasCorrection: the mean output shift per channel that weight quantization causes goes away."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accuracy_helpers import channel_mean_error, digits, export, ort_outputs, outputs, quantize
from qtool.passes.accuracy.bias_correction import BiasCorrection
from qtool.passes.accuracy.options import AccuracyError
from torch import nn

# 4-bit weights, float activations; layers only (a MatMul's bias Add would quantize its bias as a weight)
WEIGHTS_ONLY = {"activation": "float", "weight": {"bits": 4},
                "dispatch": {"quantize_op_types": ["Conv", "Gemm", "MatMul"]}}


def _cnn(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, bias=bias))


def _mean_errors(graph, config, calib, test, after) -> np.ndarray:
    reference = ort_outputs(graph, test)
    runs = quantize(graph, config, calib, after=after)
    return channel_mean_error(outputs(graph, test), reference, axis=-1 if reference.ndim == 3 else 1), runs


@pytest.mark.parametrize("config", [WEIGHTS_ONLY, {"preset": "w4a8"}])  # w4a8: int32 bias through its rule
def test_conv_channel_mean_error_drops(tmp_path, config):
    calib, test = digits(0, 128), digits(500, 256)
    errors = {}
    for inputs in (None, "quantized", "float"):
        graph = export(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
        errors[inputs], runs = _mean_errors(graph, config, calib, test,
                                            [BiasCorrection(calib, inputs=inputs)] if inputs else [])
        if inputs:
            assert [c["op"] for c in runs["BiasCorrection"].details["corrected"]] == ["/0/Conv", "/2/Conv"]
    # measured (mean over channels of |E[y_q - y]|, held-out digits): 0.0060 -> 0.00013 / 0.00065
    assert errors["quantized"].mean() < 0.05 * errors[None].mean(), errors
    assert errors["float"].mean() < 0.2 * errors[None].mean(), errors


@pytest.mark.parametrize("rank", [2, 3])  # Gemm, and MatMul with a bias Add
def test_linear_layers_corrected(tmp_path, rank):
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    calib, test = digits(0, 128, flat=True), digits(500, 256, flat=True)
    if rank == 3:  # (N, 4, 64): four rows of 16 pixels, each repeated to 64 features
        calib, test = ([{"x": b["x"].reshape(-1, 4, 16).repeat(4, axis=2)} for b in batches]
                       for batches in (calib, test))
    errors = {}
    for correct in (False, True):
        graph = export(mlp, torch.zeros(1, *calib[0]["x"].shape[1:]), tmp_path / "mlp.onnx")
        errors[correct], runs = _mean_errors(graph, WEIGHTS_ONLY, calib, test,
                                             [BiasCorrection(calib)] if correct else [])
    assert len(runs["BiasCorrection"].details["corrected"]) == 2
    assert errors[True].mean() < 0.5 * errors[False].mean(), errors


def test_layer_without_bias_is_skipped(tmp_path):
    calib = digits(0, 32)
    graph = export(_cnn(bias=False), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    runs = quantize(graph, WEIGHTS_ONLY, calib, after=[BiasCorrection(calib)])
    details = runs["BiasCorrection"].details
    assert [c["op"] for c in details["corrected"]] == ["/0/Conv"]
    assert details["skipped"] == [{"op": "/2/Conv", "reason": "no bias with one value per output channel"}]


def test_options_checked():
    with pytest.raises(AccuracyError, match="accuracy.bias_correction.samples"):
        BiasCorrection(digits(0, 8), samples=0)
    with pytest.raises(AccuracyError, match="accuracy.bias_correction.inputs"):
        BiasCorrection(digits(0, 8), inputs="both")


def test_the_summary_and_report_measure_against_the_users_model(tmp_path):
    """Bias correction changes the float biases on purpose: the summary measured the written model against the
    corrected float graph (27.0 dB where the file was 32.9 dB from the user's model, so the pass seemed to do
    nothing); now against the model as read."""
    import onnxruntime as ort
    import qtool

    torch.onnx.export(_cnn().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "cnn.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    calib = digits(0, 64, batch=64)[0]["x"]
    result = qtool.quantize(tmp_path / "cnn.onnx", "onnxruntime", {"x": calib}, output=tmp_path / "q.onnx",
                            config={**WEIGHTS_ONLY, "accuracy": {"bias_correction": True, "equalization": False}},
                            max_samples=56)
    gap = result.summary["float_vs_quantized"]
    held_out = calib[56:]
    reference = ort.InferenceSession(str(tmp_path / "cnn.onnx")).run(None, {"x": held_out})[0].astype(np.float64)
    written = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": held_out})[0].astype(np.float64)
    measured = 10 * np.log10((reference ** 2).sum() / ((reference - written) ** 2).sum())
    assert gap["held_out"] and gap["outputs"]["y"]["sqnr_db"] == pytest.approx(measured, abs=0.01)
    assert result.graph.float_reference is not None
