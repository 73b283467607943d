"""End to end through qtool.quantize and `qtool quantize`: what validate() says is what ORT does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from ort_testkit import FLOAT_COMPUTE, nodes, optimized_ops
from qtool.cli.main import main
from qtool.quant import quantized_tensors
from qtool_onnxruntime.session import ORT_ERRORS, cpu_session

CASES = [("cnn", None, "onnxruntime"), ("cnn", None, "onnxruntime-int32bias"), ("cnn", "w8a8", "onnxruntime"),
         ("cnn", "w4a8", "onnxruntime-int32bias"), ("cnn", "a16w8", "onnxruntime"),
         ("cnn", "fp8-e5m2", "onnxruntime"), ("transformer", None, "onnxruntime-int32bias"),
         ("transformer", "w8a8-asym", "onnxruntime"), ("transformer", "fp8-e4m3", "onnxruntime")]


@pytest.mark.parametrize("model,preset,platform", CASES)
def test_notes_match_ort_and_results_agree(model, preset, platform, model_files, tmp_path):
    path, calib = model_files[model]
    result = qtool.quantize(path, platform, calib, preset=preset, output=tmp_path / "q.onnx", check_agreement=True)
    severities = [d.severity for d in result.diagnostics]
    assert qtool.Severity.ERROR not in severities
    float_ops = [op for op in optimized_ops(result.files[0], tmp_path) if op in FLOAT_COMPUTE]
    assert severities.count(qtool.Severity.PERFORMANCE) == len(float_ops)
    report = result.agreement
    assert report["min_cosine"] > 0.999
    assert report["max_steps"] is None or report["max_steps"] <= 1


def test_float_vs_quantized_is_measured_on_the_exported_file_in_onnxruntime(model_files, tmp_path):
    path, calib = model_files["cnn"]
    result = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "q.onnx")
    gap = result.summary["float_vs_quantized"]
    assert gap["measured_on"] == f"onnxruntime {ort.__version__} (CPUExecutionProvider), the exported files"
    assert not gap["held_out"] and gap["samples"] == 8
    samples = result.calibration.samples(8)
    reference = np.concatenate([cpu_session(path).run(None, s)[0].ravel() for s in samples]).astype(np.float64)
    deployed = np.concatenate([cpu_session(result.files[0]).run(None, s)[0].ravel() for s in samples]).astype(
        np.float64)
    sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((deployed - reference) ** 2))
    cosine = reference @ deployed / np.linalg.norm(reference) / np.linalg.norm(deployed)
    measured = gap["outputs"]["output"]
    assert measured["sqnr_db"] == pytest.approx(sqnr, abs=1e-3) and measured["cosine"] == pytest.approx(cosine)
    assert 20 < sqnr < 60  # quantized, not float


def test_cli_with_platform_defaults_writes_integer_kernels(model_files, tmp_path, capsys):
    path, calib = model_files["cnn"]
    output = tmp_path / "cnn_q.onnx"
    code = main(["quantize", str(path), "--platform", "onnxruntime-int32bias", "--calib", str(calib), "-o",
                 str(output), "--remove-activations"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and f"wrote {output}" in out
    assert "measured on onnxruntime " in out and "agreement with qtool's simulation not checked" in out
    model = onnx.load(output)
    onnx.checker.check_model(model, full_check=True)
    assert len(nodes(model, "Relu")) == 1  # the three Relus fused after a Conv are gone, the one after Add stays
    ops = optimized_ops(output, tmp_path)
    assert ops.count("QLinearConv") == 4 and "QGemm" in ops and not set(ops) & FLOAT_COMPUTE


def test_errors_stop_the_export_unless_allowed(model_files, tmp_path, capsys):
    path, calib = model_files["cnn"]
    config = tmp_path / "two_bit.toml"
    config.write_text('[activation]\nbits = 2\nsigned = false\nsymmetric = false\n')
    output = tmp_path / "refused.onnx"
    code = main(["quantize", str(path), "--platform", "onnxruntime", "--calib", str(calib), "--config", str(config),
                 "-o", str(output)])
    assert code == 1 and "[ort.kernel-type]" in capsys.readouterr().err and not output.exists()
    result = qtool.quantize(path, "onnxruntime", calib, config=config, output=output, allow_unsupported=True,
                            check_agreement=True)
    assert output.exists() and any(d.code == "ort.kernel-type" for d in result.diagnostics)
    assert "uint2" in result.agreement["error"] and result.agreement["max_steps"] is None  # ORT refuses it
    gap = result.summary["float_vs_quantized"]  # measured on the simulation instead, saying why
    assert gap["measured_on"] == "qtool's simulation" and "uint2" in gap["runtime_error"]
    with pytest.raises(ORT_ERRORS, match="uint2"):
        optimized_ops(output, tmp_path)


def test_exported_tensors_are_the_quantized_ones(model_files, tmp_path):
    path, calib = model_files["transformer"]
    result = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "t.onnx")
    model = onnx.load(result.files[0])
    quantized = {n.input[0].removesuffix("_float") for n in nodes(model, "QuantizeLinear")}
    activations = {q.tensor for q in quantized_tensors(result.graph, roles=("activation",))}
    assert activations and activations == quantized
    weights = {q.tensor for q in quantized_tensors(result.graph, roles=("weight",))}
    assert {f"{w}_q" for w in weights} <= {t.name for t in model.graph.initializer}
    assert [o.name for o in model.graph.output] == ["output"]
