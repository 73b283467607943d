"""End to end: ``qtool quantize --platform tensorrt``, then the ranges read back into a freshly planned graph."""

import onnx
import onnxruntime as ort
import qtool
from qtool.cli.main import main
from qtool.pipeline import plan
from qtool_tensorrt import read_cache, read_ranges
from qtool_tensorrt.cache import cache_text
from qtool_tensorrt.scales import activation_scales


def test_quantize_command_writes_model_ranges_and_cache(qtool_small_model, qtool_calibration_data, tmp_path):
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "-o", str(out)]) == 0
    cache, ranges = out.with_name("model.calibration.cache"), out.with_name("model.ranges.json")
    names = [line.split(": ")[0] for line in cache.read_text().splitlines()[1:]]
    assert "input" in names and "output" in names
    produced = {o for node in onnx.load(out).graph.node for o in node.output} | {"input"}
    assert set(names) <= produced  # every range names a tensor of the exported model
    ort.InferenceSession(str(out))  # the float model still loads

    for reader, path in ((read_cache, cache), (read_ranges, ranges)):
        fresh = plan(qtool_small_model, "tensorrt").graph
        report = reader(path, fresh)
        assert report["unused"] == [] and report["missing"] == []
        assert sorted(report["set"] + report["followed"]) == sorted(names)
        assert "flat_out" in report["followed"]  # a Flatten output shares the pooled tensor's scale
        assert cache_text(activation_scales(fresh)) == cache.read_text()


def test_four_bit_activations_are_refused_before_writing(qtool_small_model, qtool_calibration_data, tmp_path, capsys):
    config = tmp_path / "four.toml"
    config.write_text("[activation]\nbits = 4\n")
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "--config", str(config), "-o", str(out)]) == 1
    error = capsys.readouterr().err
    assert "error [trt.activation-scheme] op 'conv1', tensor 'input', int4 sym per-tensor [-8, 7]" in error
    assert not out.parent.exists()


def test_non_default_weights_warn(qtool_small_model, qtool_calibration_data):
    result = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data,
                            config={"weight": {"bits": 4}})
    warnings = [d for d in result.diagnostics if d.code == "trt.weights-not-exported"]
    assert len(warnings) == 1 and warnings[0].severity is qtool.Severity.WARNING
    float_weights = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data, config={"weight": "float"})
    (warning,) = float_weights.diagnostics
    assert (warning.code, warning.op, warning.tensor, warning.scheme) == ("trt.weights-not-exported", "conv1",
                                                                          "conv1.weight", "float")
    assert "3 weight tensor(s)" in warning.message
    plain = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data)
    assert [d for d in plain.diagnostics if d.code.startswith("trt.")] == []


def test_export_options_from_the_command_line_set_the_cache_header(qtool_small_model, qtool_calibration_data,
                                                                   tmp_path):
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "-o", str(out), "--export-option", "tensorrt_version=8.6.1",
                 "--export-option", "tensorrt_calibrator=MinMaxCalibration"]) == 0
    assert out.with_name("model.calibration.cache").read_text().splitlines()[0] == "TRT-8601-MinMaxCalibration"


def test_bad_export_options_fail_before_any_work(qtool_small_model, qtool_calibration_data, tmp_path, capsys):
    out = tmp_path / "out" / "model.onnx"
    cases = [("tensorrt_versoin=8.6", "export option 'tensorrt_versoin': platform 'tensorrt' does not read it; "
                                      "did you mean 'tensorrt_version'?"),
             ("tensorrt_version=eight", "tensorrt_version 'eight': expected MAJOR.MINOR[.PATCH]"),
             ("tensorrt_calibrator=Best", "tensorrt_calibrator 'Best': expected one of EntropyCalibration2"),
             ("tensorrt_version", "--export-option 'tensorrt_version': expected KEY=VALUE")]
    for pair, message in cases:
        assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib",
                     str(qtool_calibration_data), "-o", str(out), "--export-option", pair]) != 0
        error = capsys.readouterr().err
        assert message in " ".join(error.split()), error
        assert not out.parent.exists()


def test_list_platforms_names_the_export_options():
    described = qtool.get_platform("tensorrt").describe()["export_options"]
    assert set(described) == {"tensorrt_version", "tensorrt_calibrator"}
    assert "8.6.1" in described["tensorrt_version"]
