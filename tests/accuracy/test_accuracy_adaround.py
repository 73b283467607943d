"""AdaRound: learned rounding of 4-bit weights beats rounding to nearest; the result is exact on the grid."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
import torch
from accuracy_helpers import digits, export, ort_outputs, outputs, quantize, snr_db
from qtool.calibration import load_calibration_data
from qtool.passes.accuracy.adaround import AdaRound
from qtool.passes.accuracy.bias_correction import BiasCorrection
from qtool.passes.accuracy.options import AccuracyError
from qtool.quant import fake_quantize
from torch import nn

_INT8 = {"format": "int", "bits": 8, "signed": True, "symmetric": True}
# int4 per-channel min/max weights, int8 activations, no fallback: the rounding, not the preset, under test
W4A8 = {"activation": {**_INT8, "granularity": "per_tensor"},
        "weight": {**_INT8, "bits": 4, "granularity": "per_channel"}, "calibration": {"observer": "minmax"}}


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))


@pytest.fixture(scope="module")
def calib():
    return digits(0, 128)


@pytest.fixture(scope="module")
def test_data():
    return digits(500, 256)


def _snr(tmp_path, calib, test_data, after) -> tuple[float, dict, qtool.Graph]:
    graph = export(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    reference = ort_outputs(graph, test_data)
    runs = quantize(graph, W4A8, calib, after=after)
    return snr_db(outputs(graph, test_data), reference), runs, graph


def test_beats_round_to_nearest(tmp_path, calib, test_data):
    nearest, _, _ = _snr(tmp_path, calib, test_data, [])
    learned, runs, _ = _snr(tmp_path, calib, test_data, [AdaRound(calib)])
    layers = runs["AdaRound"].details["layers"]
    assert [r["op"] for r in layers] == ["/0/Conv", "/2/Conv", "/4/Conv"]
    assert all(r["adaround_mse"] < r["nearest_mse"] and r["kept"] == "adaround" for r in layers), layers
    assert [r["rows"] for r in layers] == [2048, 512, 512]  # 32 samples: 32*8*8 positions, then 32*4*4
    # measured 24.5 -> 31.9 dB; with every layer's input taken from the graph rounded to nearest
    # (not from the layers before it as rounded) it was 25.4 dB
    assert learned > nearest + 6.0, (nearest, learned)


def test_bias_correction_after_adaround_compares_with_float_weights(tmp_path, calib, test_data):
    learned, _, _ = _snr(tmp_path, calib, test_data, [AdaRound(calib, iterations=100)])
    both, runs, _ = _snr(tmp_path, calib, test_data, [AdaRound(calib, iterations=100), BiasCorrection(calib)])
    assert all(c["largest_shift"] > 0 for c in runs["BiasCorrection"].details["corrected"])
    assert both > learned + 0.1, (learned, both)  # measured 30.65 -> 30.84 dB


def test_weights_stay_on_the_grid_through_baking(tmp_path, calib):
    graph = export(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    quantize(graph, W4A8, calib, after=[AdaRound(calib, iterations=20)])
    changed = 0
    for name in ("/0/Conv", "/2/Conv", "/4/Conv"):
        op = graph.operations[name]
        var, tqc = op.inputs[1], op.quant.inputs[1]
        assert tqc.state is qtool.QuantizationState.BAKED and tqc.notes["rounding"] in ("adaround", "nearest")
        again = fake_quantize(torch.from_numpy(var.value), tqc.scheme, tqc.scale, tqc.offset).numpy()
        np.testing.assert_array_equal(again, var.value)
        nearest = fake_quantize(torch.from_numpy(var.float_value), tqc.scheme, tqc.scale, tqc.offset).numpy()
        changed += int((nearest != var.value).sum())
    assert changed > 0


def test_linear_layers_and_progress(tmp_path):
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    calib, test = digits(0, 128, flat=True), digits(500, 256, flat=True)
    snr = {}
    for after in ([], [AdaRound(calib, iterations=100, progress=True)]):
        graph = export(mlp, torch.zeros(1, 64), tmp_path / "mlp.onnx")
        reference = ort_outputs(graph, test)
        quantize(graph, W4A8, calib, after=after)
        snr[bool(after)] = snr_db(outputs(graph, test), reference)
    assert snr[True] > snr[False] + 1.0, snr


def test_float_weight_formats_are_skipped(tmp_path, calib):
    graph = export(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    runs = quantize(graph, {"preset": "fp8-e4m3"}, calib, after=[AdaRound(calib, iterations=5)])
    details = runs["AdaRound"].details
    assert details["layers"] == [] and len(details["skipped"]) == 3
    assert "not an integer grid" in details["skipped"][0]["reason"]


def test_min_weight_share_and_time_budget_leave_layers_at_nearest(tmp_path, calib, test_data):
    nearest, _, _ = _snr(tmp_path, calib, test_data, [])
    for option, reason in ({"min_weight_share": 1.0}, "min_weight_share 1"), ({"time_budget_s": 0}, "time budget"):
        snr, runs, graph = _snr(tmp_path, calib, test_data, [AdaRound(calib, **option)])
        details = runs["AdaRound"].details
        assert details["layers"] == [] and [s["op"] for s in details["skipped"]] == ["/0/Conv", "/2/Conv", "/4/Conv"]
        assert all(reason in s["reason"] for s in details["skipped"]), details
        assert "rounding" not in graph.operations["/2/Conv"].quant.inputs[1].notes
        assert snr == pytest.approx(nearest, abs=1e-6)


def test_time_budget_shares_iterations(tmp_path, calib):
    graph = export(_cnn(), torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    runs = quantize(graph, W4A8, calib, after=[AdaRound(calib, iterations=100000, time_budget_s=3.0)])
    details = runs["AdaRound"].details
    assert all(20 <= r["iterations"] < 100000 for r in details["layers"]), details  # 100000 would take minutes
    assert all("time budget" in s["reason"] for s in details["skipped"]), details
    assert len(details["layers"]) + len(details["skipped"]) == 3
    assert runs["AdaRound"].seconds < 30.0  # 3 s, and a busy machine's estimates


@pytest.mark.parametrize(("key", "value"), [("iterations", 0), ("warmup", 2.0), ("samples", 0), ("rows", 0),
                                            ("min_weight_share", 1.5), ("time_budget_s", -1), ("seed", 1.5)])
def test_options_checked(calib, key, value):
    with pytest.raises(AccuracyError, match=f"accuracy.adaround.{key}"):
        AdaRound(calib, **{key: value})


def test_samples_of_several_shapes_all_learn(tmp_path):
    """Calibration batches may change shape (sequences of several lengths): AdaRound learns on every sample, the
    batches of one shape joined and the others run beside them (it learned on the largest group of one shape
    alone, 16 of these 24 samples, with a warning)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    path = tmp_path / "seq.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 5, 16),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "steps"}, "y": {0: "batch", 1: "steps"}})
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((8, steps, 16)).astype(np.float32)} for steps in (5, 5, 7)]
    runs = quantize(qtool.load(path), W4A8, calib, after=[AdaRound(calib, iterations=20)])
    layers = runs["AdaRound"].details["layers"]
    assert [layer["rows"] for layer in layers] == [16 * 5 + 8 * 7] * 2  # every position of every sample
    assert all(layer["kept"] in ("adaround", "nearest") for layer in layers)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_learns(tmp_path, dtype):
    """A float16 or bfloat16 model (float32 calibration data, cast as read): the layer's inputs met the float32
    weight AdaRound learns in a matmul (RuntimeError: expected m1 and m2 to have the same dtype), and a bfloat16
    weight did not become a torch tensor (TypeError), so --optimize failed on every such model."""
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    path = tmp_path / "half.onnx"
    torch.onnx.export(mlp.eval(), (torch.zeros(1, 16, dtype=dtype),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(2)]
    result = qtool.quantize(path, "onnxruntime", calib, accuracy={"adaround": {"iterations": 20}},
                            output=tmp_path / "q.onnx")
    details = next(run for run in result.pass_runs if run.name == "AdaRound").details
    assert [layer["kept"] for layer in details["layers"]] == ["adaround", "adaround"] and details["skipped"] == []
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 20


def test_feeds_run_side_by_side_never_joined(tmp_path):
    """Feeds (one model call each) run as they are: an input without a samples axis (a vector added to every step)
    was joined with the other feeds' (48 values where the model adds 16) and the run failed (a Llama segment's
    shape vectors and rotary tables under --by-blocks failed so)."""
    class Stepwise(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(16, 32), nn.Linear(32, 8)

        def forward(self, x, offset):
            return self.second(torch.relu(self.first(x + offset)))

    torch.manual_seed(3)
    path = tmp_path / "steps.onnx"
    torch.onnx.export(Stepwise().eval(), (torch.zeros(5, 16), torch.zeros(16)), str(path), dynamo=False,
                      input_names=["x", "offset"], output_names=["y"], dynamic_axes={"x": {0: "steps"}})
    graph = qtool.load(path)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((steps, 16)).astype(np.float32),
              "offset": rng.standard_normal(16).astype(np.float32)} for steps in (5, 7, 5)]
    data = load_calibration_data(feeds, graph, layout="feeds")
    runs = quantize(graph, W4A8, data, after=[AdaRound(data, iterations=20)])
    layers = runs["AdaRound"].details["layers"]
    assert [layer["rows"] for layer in layers] == [5 + 7 + 5] * 2
    assert all(layer["kept"] in ("adaround", "nearest") for layer in layers)
