"""The onnxruntime default fallback: a MatMul whose input has one huge channel goes back to float, nothing else, and
never more than a tenth of the compute ops (none on models of fewer than 10), and nothing on a model whose output is
already at 30 dB."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import qtool
import torch
from accuracy_helpers import export, samples, snr_db
from qtool.cli.main import main
from qtool.cli.quantize import fallback_lines
from qtool.passes.accuracy.fallback import SensitivityFallback
from qtool.passes.accuracy.options import AccuracyError
from qtool.passes.accuracy.outliers import outlier_ratios
from torch import nn

DOWN = "/down/MatMul"
#: the default passes that fix outliers before the fallback sees them (test_accuracy_transformer_outliers.py)
NO_SPLIT = {"channel_split": False, "outlier_outputs": False}


class FeedForward(nn.Module):
    """up -> GELU -> down, as in a transformer block; with ``outlier`` the GELU output's channel 0 sits near that
    value (the rest within [-0.17, ~3]) and ``down`` barely reads it, so per-tensor uint8 wastes its grid on it."""

    def __init__(self, outlier: float | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 8)
        if outlier is not None:
            with torch.no_grad():
                self.up.bias[0] = outlier
                self.down.weight[:, 0] *= 0.01

    def forward(self, x):
        return self.down(torch.nn.functional.gelu(self.up(x)))


def _model(tmp_path, outlier: float | None = 40.0):
    path = tmp_path / "ffn.onnx"
    export(FeedForward(outlier), torch.zeros(1, 8, 16), path)
    return path


def _ort(path, batches) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, batch)[0] for batch in batches])


def _asking(max_share: float, **changes) -> dict:
    """The platform's default fallback table with a share a user asked for (the default's allows no op on these
    small models), and without the default's 30 dB as enough unless ``changes`` set it."""
    table = qtool.get_platform("onnxruntime").default_config()["accuracy"]["fallback"]
    table = {key: value for key, value in table.items() if key != "enough_snr_db"}
    return {**NO_SPLIT, "fallback": {**table, "max_share": max_share, **changes}}


def _quantize(tmp_path, model, calib, name: str, **kwargs):
    output = tmp_path / f"{name}.onnx"
    result = qtool.quantize(str(model), "onnxruntime", calib, output=output, **kwargs)
    fallback = next((r for r in result.pass_runs if r.name == "SensitivityFallback"), None)
    return result, fallback, output


def test_default_keeps_a_small_model_whole(tmp_path, calib):
    result, run, _ = _quantize(tmp_path, _model(tmp_path), calib, "default")
    assert run.details["max_ops"] == 0 and run.details["changed"] == [] and not run.modified
    assert "outlier_ratios" not in run.details  # nothing measured: the share allows no op of 2
    assert fallback_lines(result.pass_runs) == fallback_lines(result.pass_runs, 30.0) == [
        "sensitivity fallback: (max_share allows no op of a model this small), nothing changed"]
    assert fallback_lines(result.pass_runs, 29.9) == [  # an output below 30 dB: how to ask for more
        "sensitivity fallback: (max_share allows no op of a model this small), nothing changed; a budget of yours "
        "(--min-snr, or --metric with --max-drop) lifts that limit"]
    assert all(op.quant.quantized for op in result.graph.operations.values() if op.op_type == "MatMul")


def test_asked_share_returns_the_outlier_layer_to_float(tmp_path, calib, held_out):
    model = _model(tmp_path)
    reference = _ort(model, held_out)
    result, run, output = _quantize(tmp_path, model, calib, "default", accuracy=_asking(0.5))
    _, off, plain = _quantize(tmp_path, model, calib, "off", accuracy={**NO_SPLIT, "fallback": False})
    with_rule, without = snr_db(_ort(output, held_out), reference), snr_db(_ort(plain, held_out), reference)
    assert without < 21 and with_rule > 33, (without, with_rule)  # measured 18.3 -> 37.1 dB in ORT
    assert off is None
    details = run.details
    assert list(details["outlier_ratios"]) == [DOWN] and details["outlier_ratios"][DOWN] > 8
    assert details["met"] and [c["op"] for c in details["changed"]] == [DOWN]
    down, up = result.graph.operations[DOWN], result.graph.operations["/up/MatMul"]
    assert not down.quant.quantized and "input channel outlier" in down.quant.reason
    assert up.quant.quantized  # its input (x) has no outlier channel: not a candidate


class OutlierMLP(nn.Module):
    """Three Linear layers with GELU between them (equalization cannot move GELU's outliers); the input's channel 0
    is 40x the others and the first layer's channels 0-1 sit near 30, so two of the three Gemms read outliers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)
        with torch.no_grad():
            for layer, reader in ((self.a, self.b), (self.b, self.c)):
                layer.bias[:2] = 30.0
                reader.weight[:, :2] *= 0.02

    def forward(self, x):
        x = torch.cat([x[:, :1] * 40, x[:, 1:]], dim=1)
        return self.c(torch.nn.functional.gelu(self.b(torch.nn.functional.gelu(self.a(x)))))


def test_default_keeps_most_gemms_of_a_small_mlp_quantized(tmp_path):
    path = tmp_path / "outlier_mlp.onnx"
    export(OutlierMLP(), torch.zeros(1, 16), path)
    calib = samples((16,), 64)
    result, run, _ = _quantize(tmp_path, path, calib, "mlp", accuracy=NO_SPLIT)
    gemms = [op for op in result.graph.operations.values() if op.op_type == "Gemm"]
    assert len(gemms) == 3 and all(op.quant.quantized for op in gemms)
    assert run.details["max_ops"] == 0  # a tenth of 3 compute ops, rounded down
    # a share asked for: one op at most, and only for a measured gain
    shared, shared_run, _ = _quantize(tmp_path, path, calib, "shared", accuracy=_asking(0.34))
    details = shared_run.details
    assert details["candidates"] == 2 and details["max_ops"] == 1
    assert len(details["changed"]) <= 1 and details["after"] - details["before"] >= 1.0  # a measured gain
    assert sum(op.quant.quantized for op in shared.graph.operations.values() if op.op_type == "Gemm") >= 2
    # asked for (a budget of its own, no share limit), the fallback may take more
    asked, asked_run, _ = _quantize(tmp_path, path, calib, "asked",
                                    accuracy={**NO_SPLIT, "fallback": {"min_snr_db": 40}})
    assert sum(not op.quant.quantized for op in asked.graph.operations.values() if op.op_type == "Gemm") >= 2


def test_an_output_snr_already_enough_changes_nothing(tmp_path, calib):
    model = _model(tmp_path)
    _, run, _ = _quantize(tmp_path, model, calib, "enough", accuracy=_asking(0.5, enough_snr_db=15.0))
    assert run.details["before"] >= 15.0 and run.details["met"]  # about 18 dB all-int8: enough at 15
    assert run.details["changed"] == [] and not run.modified
    _, needed, _ = _quantize(tmp_path, model, calib, "needed", accuracy=_asking(0.5, enough_snr_db=40.0))
    assert [c["op"] for c in needed.details["changed"]] == [DOWN]  # below 40 dB: the gap budget still acts


def test_no_gain_changes_nothing(tmp_path, calib):
    _, run, _ = _quantize(tmp_path, _model(tmp_path), calib, "nogain",
                          accuracy={**NO_SPLIT, "fallback": {"op_types": ["MatMul"], "outlier_ratio": 8.0,
                                                             "max_gap_db": 1.0, "min_gain_db": 60.0, "samples": 16}})
    assert run.details["changed"] == [] and run.details["after"] == run.details["before"]
    assert not run.modified


def test_no_outlier_changes_nothing_and_runs_nothing(tmp_path, calib):
    result, run, _ = _quantize(tmp_path, _model(tmp_path, outlier=None), calib, "plain")
    details = run.details
    assert details["candidates"] == 0 and details["tried"] == {} and details["before"] is None
    assert not run.modified and all(op.quant.quantized for op in result.graph.operations.values()
                                    if op.op_type == "MatMul")


def test_cnn_has_no_candidate(tmp_path):
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    path = tmp_path / "cnn.onnx"
    export(conv, torch.zeros(1, 3, 8, 8), path)
    _, run, _ = _quantize(tmp_path, path, samples((3, 8, 8), 16), "cnn-quantized",  # not cnn.onnx: the input model
                          accuracy=_asking(0.5))
    assert run.details["candidates"] == 0 and "outlier_ratios" in run.details and not run.modified


def test_config_file_turns_it_off(tmp_path, calib):
    config = tmp_path / "qtool.toml"
    config.write_text("[accuracy]\nfallback = false\n")
    result, run, _ = _quantize(tmp_path, _model(tmp_path), calib, "file", config=str(config))
    assert run is None and result.graph.operations[DOWN].quant.quantized


def test_ratio_is_largest_over_median_channel(tmp_path, calib):
    graph = export(FeedForward(40.0), torch.zeros(1, 8, 16), tmp_path / "r.onnx")
    module = FeedForward(40.0).eval()
    with torch.no_grad():
        x = torch.cat([torch.from_numpy(b["x"]) for b in calib])
        peaks = torch.nn.functional.gelu(module.up(x)).abs().amax(dim=(0, 1)).double()
    ratios = outlier_ratios(graph, calib, list(graph.operations.values()))
    assert set(ratios) == {"/up/MatMul", DOWN}
    assert ratios[DOWN] == pytest.approx(float(peaks.max() / peaks.median()), rel=1e-5) and ratios["/up/MatMul"] < 3


def test_cli_says_what_changed_and_why(tmp_path, calib, capsys):
    data, config = tmp_path / "calib.npz", tmp_path / "share.toml"
    np.savez(data, x=np.concatenate([b["x"] for b in calib]))
    config.write_text("[accuracy]\nchannel_split = false\noutlier_outputs = false\n"
                      "fallback = { op_types = [\"MatMul\", \"Gemm\"], outlier_ratio = 8, max_gap_db = 1, "
                      "max_share = 0.5, min_gain_db = 1, samples = 16 }\n")
    assert main(["quantize", str(_model(tmp_path)), "--platform", "onnxruntime", "--calib", str(data),
                 "--config", str(config), "--output", str(tmp_path / "cli.onnx"), "--explain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "accuracy passes: equalization, fallback" in out
    assert f"{DOWN} -> float (input channel outlier" in out and "1 of 1 candidate ops changed" in out


def test_options_checked(calib):
    with pytest.raises(AccuracyError, match="accuracy.fallback.outlier_ratio: must be a number in"):
        SensitivityFallback(calib, outlier_ratio=0.5)
    with pytest.raises(AccuracyError, match="accuracy.fallback.op_types: must be a non-empty list"):
        SensitivityFallback(calib, op_types="MatMul")
    with pytest.raises(AccuracyError, match="accuracy.fallback.max_share: must be a number in"):
        SensitivityFallback(calib, max_share=2)
    with pytest.raises(AccuracyError, match="accuracy.fallback.min_gain_db: applies to an SNR budget only"):
        SensitivityFallback(calib, min_cosine=0.99, min_gain_db=1.0)
    with pytest.raises(AccuracyError, match="accuracy.fallback.enough_snr_db: applies to a max_gap_db budget only"):
        SensitivityFallback(calib, min_snr_db=20.0, enough_snr_db=30.0)


def test_a_restored_state_needs_no_data_for_the_default(tmp_path):
    path, state = tmp_path / "cnn.onnx", tmp_path / "state.json"
    export(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)), torch.zeros(1, 3, 8, 8), path)
    first = qtool.quantize(str(path), "onnxruntime", samples((3, 8, 8), 16), output=tmp_path / "a.onnx",
                           save_state=state)
    again = qtool.quantize(str(path), "onnxruntime", None, output=tmp_path / "b.onnx", load_state=state)
    assert "SensitivityFallback" in [r.name for r in first.pass_runs]
    assert "SensitivityFallback" not in [r.name for r in again.pass_runs]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    with pytest.raises(AccuracyError, match="accuracy.fallback: SensitivityFallback needs calibration data"):
        qtool.quantize(str(path), "onnxruntime", None, load_state=state, accuracy={"fallback": {"min_snr_db": 20}})


def test_a_state_saved_after_the_fallback_floated_ops_restores_without_data(tmp_path, calib):
    """The fallback's float decisions were measured; the state file holds them, and restoring it without data (the
    fallback cannot run then) writes the same model, where it refused the ops dispatch quantizes before."""
    model, state = _model(tmp_path), tmp_path / "state.json"
    first, run, output = _quantize(tmp_path, model, calib, "first", accuracy=_asking(0.5), save_state=state)
    assert [c["op"] for c in run.details["changed"]] == [DOWN]
    again = qtool.quantize(str(model), "onnxruntime", None, output=tmp_path / "again.onnx", load_state=state,
                           accuracy=NO_SPLIT)
    assert not again.graph.operations[DOWN].quant.quantized
    assert again.graph.operations[DOWN].quant.reason == first.graph.operations[DOWN].quant.reason
    assert (tmp_path / "again.onnx").read_bytes() == output.read_bytes()


def test_an_op_whose_contracted_axis_is_a_sequence_has_no_outlier_ratio():
    """Attention's scores @ V contracts the sequence axis: with feeds of several lengths it has no channels."""
    graph = qtool.Graph()
    x, xt, s, y = (graph.add_variable(n, dtype=np.dtype(np.float32)) for n in ("x", "xt", "s", "y"))
    x.shape = ["seq", 4]
    graph.inputs.append(x)
    graph.add_operation("Transpose", [x], [xt], name="t", attributes={"perm": [1, 0]})
    graph.add_operation("MatMul", [x, xt], [s], name="scores")
    graph.add_operation("MatMul", [s, x], [y], name="mix")
    graph.outputs.append(y)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((n, 4)).astype(np.float32)} for n in (3, 5)]
    ratios = outlier_ratios(graph, feeds, list(graph.operations.values()))
    assert list(ratios) == ["scores"] and ratios["scores"] >= 1.0
