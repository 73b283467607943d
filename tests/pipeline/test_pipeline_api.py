"""qtool.quantize with an in-process platform: passes, validation gate, state round trip, agreement."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
from pipeline_kit import TINY, run_model
from qtool.config import ConfigError
from qtool.pipeline import UnsupportedModelError, plan

X = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)


def test_quantize_runs_every_pass_and_exports_through_the_platform(tiny_platform, cnn_model, calib_npz, tmp_path):
    output = tmp_path / "out.onnx"

    result = qtool.quantize(cnn_model, TINY, calib_npz, output=output, check_agreement=True)

    assert [r.name for r in result.pass_runs] == [
        "GraphSimplify", "Dispatch", "QuantizeFusion", "QuantizeSimplify", "ParameterQuantize",
        "RuntimeCalibration", "QuantAlignment", "PassiveParameterQuantize", "Baking"]
    assert result.pass_runs[0].details["folded"]  # the BatchNormalization went into conv1
    assert result.files == [output] and output.is_file()
    assert result.agreement["samples"] == 4 and result.agreement["max_abs"] > 0  # float export vs simulation
    summary = result.summary
    assert summary["platform"] == TINY and summary["ops"]["quantized"] == 7 and summary["files"] == [str(output)]
    assert summary["diagnostics"] == {"error": 0, "warning": 0, "performance": 0}
    assert result.config.activation["quant_min"] == -128
    reference = run_model(cnn_model, X)
    exported = run_model(output, X)  # baked weights, float activations
    assert np.abs(exported - reference).max() < 0.05 * np.abs(reference).max()


def test_the_agreement_check_runs_where_the_simulation_was_used_or_when_asked(tiny_platform, cnn_model, calib_npz,
                                                                           tmp_path):
    plain = qtool.quantize(cnn_model, TINY, calib_npz, output=tmp_path / "a.onnx")
    assert set(plain.agreement) == {"skipped"} and plain.summary["agreement"] == plain.agreement
    assert "no step of this run used qtool's simulation" in plain.agreement["skipped"]
    assert "check_agreement=True (CLI --check-agreement) runs it" in plain.agreement["skipped"]
    assert plain.summary["float_vs_quantized"]["measured_on"] == "qtool's simulation"  # TinyPlatform cannot run()

    never = qtool.quantize(cnn_model, TINY, calib_npz, output=tmp_path / "b.onnx", check_agreement=False)
    assert never.agreement["skipped"].startswith("check_agreement=False")

    corrected = qtool.quantize(cnn_model, TINY, calib_npz, output=tmp_path / "c.onnx",
                               accuracy={"bias_correction": True})  # measured on the simulation: checked
    assert corrected.agreement["samples"] == 4 and corrected.agreement["max_abs"] > 0
    assert qtool.quantize(cnn_model, TINY, calib_npz, output=tmp_path / "d.onnx", accuracy={"bias_correction": True},
                          check_agreement=False).agreement["skipped"].startswith("check_agreement=False")


@pytest.mark.parametrize("check", [None, True])
def test_a_platform_that_runs_no_files_says_so_instead_of_asking_for_the_check(cnn_model, calib_npz, tmp_path, check):
    """TensorRT's files run nowhere here: the summary pointed at --check-agreement, which then did nothing."""
    result = qtool.quantize(cnn_model, "tensorrt", calib_npz, output=tmp_path / "t.onnx", check_agreement=check)
    assert result.agreement == {"skipped": "platform 'tensorrt' runs no files here to compare with"}


def test_error_diagnostics_stop_the_run_before_anything_is_written(tiny_platform, cnn_model, calib_npz, tmp_path):
    tiny_platform.refuse = ("Gemm",)
    output = tmp_path / "out.onnx"

    with pytest.raises(UnsupportedModelError, match=r"tiny-test cannot run .*1 error.*refused.*Nothing was written"):
        qtool.quantize(cnn_model, TINY, calib_npz, output=output)
    assert not output.exists()

    result = qtool.quantize(cnn_model, TINY, calib_npz, output=output, allow_unsupported=True)
    assert output.is_file() and [d.code for d in result.diagnostics] == ["tiny.refused"]
    assert result.summary["diagnostics"]["error"] == 1


def test_bad_config_fails_before_the_model_is_read(tiny_platform, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[weight]\nbits = 99\n")

    with pytest.raises(ConfigError, match="weight.bits"):
        qtool.quantize(tmp_path / "no-such-model.onnx", TINY, tmp_path / "no-such-data.npz", config=config)


def test_pass_warnings_become_diagnostics(tiny_platform, cnn_model, calib_npz, tmp_path):
    graph = qtool.load(cnn_model)
    fc_bias = next(op for op in graph.operations.values() if op.op_type == "Gemm").inputs[2]
    fc_bias.value = np.full_like(fc_bias.value, 1e12)

    result = qtool.quantize(graph, TINY, calib_npz, config={"bias": {"mode": "int32"}})

    warnings = [d for d in result.diagnostics if d.code == "bias-saturation"]
    assert len(warnings) == 1 and warnings[0].tensor == fc_bias.name and warnings[0].severity is qtool.Severity.WARNING


def test_saved_state_reproduces_the_export_without_data(tiny_platform, cnn_model, calib_npz, tmp_path):
    first, second, state = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "state.json"
    qtool.quantize(cnn_model, TINY, calib_npz, output=first, save_state=state)

    result = qtool.quantize(cnn_model, TINY, None, output=second, load_state=state)

    assert "RestoreState" in [r.name for r in result.pass_runs]
    assert result.agreement == {"skipped": "no samples to run it on: a state was loaded without calibration data "
                                           "(--calib)"}  # it printed nothing, even with --check-agreement
    assert first.read_bytes() == second.read_bytes()


def test_a_state_from_another_config_is_refused(tiny_platform, cnn_model, calib_npz, tmp_path):
    state = tmp_path / "state.json"
    qtool.quantize(cnn_model, TINY, calib_npz, save_state=state)

    with pytest.raises(qtool.QtoolError, match="scheme"):
        qtool.quantize(cnn_model, TINY, None, load_state=state, config={"activation": {"bits": 16}})


@pytest.mark.parametrize("saved, loaded", [(True, False), (False, True)])
def test_a_state_from_a_model_equalized_otherwise_is_refused(tiny_platform, cnn_model, calib_npz, tmp_path, saved,
                                                              loaded):
    """Equalization changes weights before calibration: ranges saved with it on don't fit a run with it off, and
    back (a PP-OCRv4 state saved with equalization, loaded without, gave 0.05 character accuracy instead of 0.98)."""
    state = tmp_path / "state.json"
    qtool.quantize(cnn_model, TINY, calib_npz, save_state=state, config={"accuracy": {"equalization": saved}})

    with pytest.raises(qtool.QtoolError, match=rf"calibrated with accuracy\.equalization = {saved}, this run has "
                                               rf"{loaded}: .*calibrate again"):
        qtool.quantize(cnn_model, TINY, None, load_state=state, config={"accuracy": {"equalization": loaded}})
    qtool.quantize(cnn_model, TINY, None, load_state=state, config={"accuracy": {"equalization": saved}})


def test_a_state_saved_after_adaround_is_refused_where_it_would_not_run_again(tiny_platform, cnn_model, calib_npz,
                                                                             tmp_path):
    """AdaRound changes weights after calibration and the state holds no weights: without it (no data to run it on)
    the restored model was another one, written with a success message."""
    state = tmp_path / "state.json"
    first = qtool.quantize(cnn_model, TINY, calib_npz, save_state=state, output=tmp_path / "a.onnx",
                           config={"accuracy": {"adaround": {"iterations": 20}}})
    with pytest.raises(qtool.QtoolError, match=r"saved with accuracy\.adaround on, which changed the weights after "
                                               r"calibration; .*run with --calib"):
        qtool.quantize(cnn_model, TINY, None, load_state=state)
    again = qtool.quantize(cnn_model, TINY, calib_npz, load_state=state, output=tmp_path / "b.onnx",
                           config={"accuracy": {"adaround": {"iterations": 20}}})
    assert first.files[0].read_bytes() == again.files[0].read_bytes()


def test_calibration_data_or_a_state_is_required(tiny_platform, cnn_model):
    with pytest.raises(qtool.QtoolError, match="calibration data is required"):
        qtool.quantize(cnn_model, TINY, None)


def test_plan_needs_no_data(tiny_platform, cnn_model):
    planned = plan(cnn_model, TINY)

    assert [r.name for r in planned.pass_runs] == ["GraphSimplify", "Dispatch", "QuantizeFusion", "QuantizeSimplify"]
    assert all(op.quant is not None for op in planned.graph.operations.values())


def test_an_export_far_from_the_simulation_is_a_warning():
    """The agreement check found 10 steps between ORT and the simulation (a fallback's float Conv that ORT ran on
    int8 weights) and said nothing; within 2 steps (rounding) is agreement."""
    from qtool.pipeline import disagreement

    report = {"runtime": "onnxruntime", "max_steps": 10.0,
              "outputs": {"a": {"max_steps": 1.0, "cosine": 1.0}, "b": {"max_steps": 10.0, "cosine": 0.998}}}
    (found,) = disagreement(report)
    assert (found.code, found.tensor) == ("agreement.differs", "b") and "10 quantization steps" in found.message
    assert disagreement({**report, "max_steps": 2.0}) == [] and disagreement({"max_steps": None}) == []
    jitter = {"runtime": "onnxruntime", "max_steps": 84.0, "outputs": {"y": {"max_steps": 84.0, "cosine": 0.9999992}}}
    assert disagreement(jitter) == []  # one uint8 step upstream read on an int16 output grid: the same SNR
    assert disagreement(None) == []
    nan = {"runtime": "onnxruntime", "max_steps": 0.0,
           "outputs": {"y": {"max_steps": 0.0, "cosine": 1.0, "nonfinite_differs": 3}}}
    (found,) = disagreement(nan)  # elements NaN or infinite in one of the two alone
    assert (found.code, found.tensor) == ("agreement.differs", "y") and "3 element(s) NaN or infinite" in found.message


def test_an_output_nan_in_both_models_agrees(tmp_path):
    """A Sqrt of negatives after a quantized MatMul: NaN in the written model where qtool's simulation has NaN too.
    Every difference read NaN and the cosine 0 before."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Sqrt", ["m"], ["y"], name="sqrt")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "sqrt.onnx")
    np.savez(tmp_path / "calib.npz", x=3 * rng.standard_normal((8, 16)).astype(np.float32))

    result = qtool.quantize(tmp_path / "sqrt.onnx", "onnxruntime", tmp_path / "calib.npz",
                            output=tmp_path / "q.onnx", check_agreement=True)

    found = result.agreement["outputs"]["y"]
    assert found["cosine"] > 0.9999 and found["max_relative"] < 1e-5 and "nonfinite_differs" not in found
    assert not any(d.code == "agreement.differs" for d in result.diagnostics)


@pytest.mark.parametrize("saved, loaded", [(False, True), (True, False)])
def test_an_equalization_mismatch_is_named_before_the_weights_are_checked(tmp_path, saved, loaded):
    """On a model whose pair equalization rescales, the weights' check ran first and blamed the model ('another
    model, or other weights under the same names')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * np.array([1, 10, 0.1, 3], np.float32)[:, None, None, None]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(
        np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    onnx.save(helper.make_model(helper.make_graph(
        nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)), tmp_path / "m.onnx")
    calib = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    state = tmp_path / "state.json"
    qtool.quantize(tmp_path / "m.onnx", "onnxruntime", calib, calib_layout="feeds", save_state=state,
                   config={"accuracy": {"equalization": saved}})
    with pytest.raises(qtool.QtoolError, match=rf"calibrated with accuracy\.equalization = {saved}, this run has "
                                               rf"{loaded}"):
        qtool.quantize(tmp_path / "m.onnx", "onnxruntime", None, load_state=state,
                       config={"accuracy": {"equalization": loaded}})


def test_a_state_saved_again_from_a_reload_keeps_where_its_calibration_came_from(tiny_platform, cnn_model, calib_npz,
                                                                                 tmp_path):
    """--load-state X --save-state Y wrote data_fingerprint null: Y no longer said which data calibrated it."""
    import json

    first, second = tmp_path / "x.json", tmp_path / "y.json"
    qtool.quantize(cnn_model, TINY, calib_npz, save_state=first)
    qtool.quantize(cnn_model, TINY, None, load_state=first, save_state=second)
    fingerprints = [json.loads(path.read_text())["data_fingerprint"] for path in (first, second)]
    assert fingerprints[0] is not None and fingerprints[1] == fingerprints[0]


def test_a_state_reloaded_with_other_observer_settings_is_refused_where_an_observer_reads_them(
        tiny_platform, cnn_model, calib_npz, tmp_path):
    """A changed calibration.percentile under observer "percentile" was taken silently and the state's model
    written; one no observer reads (percentile under "minmax") changes nothing and is no reason to refuse."""
    state = tmp_path / "state.json"
    for observer in ("percentile", "minmax"):
        saved = {"calibration": {"observer": observer, "percentile": 99.9}}
        qtool.quantize(cnn_model, TINY, calib_npz, save_state=state, config=saved)
        changed = {"calibration": {"observer": observer, "percentile": 90.0}}
        if observer == "percentile":
            with pytest.raises(qtool.QtoolError, match=r"calibrated with calibration\.percentile = 99\.9, this run "
                                                       r"has 90\.0: .*calibrate again"):
                qtool.quantize(cnn_model, TINY, None, load_state=state, config=changed)
        else:
            qtool.quantize(cnn_model, TINY, None, load_state=state, config=changed)
        qtool.quantize(cnn_model, TINY, None, load_state=state, config=saved)


def test_a_leading_tilde_is_the_home_folder(cnn_model, calib_npz, tmp_path, monkeypatch):
    """Python expands no '~': the model was 'no such model file' and output="~/out/m.onnx" made a folder named '~'
    in the working directory."""
    import shutil

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    shutil.copy(cnn_model, home / "m.onnx")
    shutil.copy(calib_npz, home / "calib.npz")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    result = qtool.quantize("~/m.onnx", "onnxruntime", "~/calib.npz", output="~/out/q.onnx", save_state="~/s.json")
    assert result.files == [home / "out" / "q.onnx"] and (home / "s.json").is_file()
    assert not list(work.iterdir())
    assert plan("~/m.onnx", "onnxruntime").graph.operations
