"""annotate(): the ORT platform does not propose what it would flag; validation runs once per quantize."""

from __future__ import annotations

import numpy as np
import onnx
import qtool
import qtool_onnxruntime.export
import qtool_onnxruntime.rules
from ort_testkit import single_op_proto

SAMPLES = [{"x": np.random.default_rng(i).standard_normal((1, 8, 6, 6)).astype(np.float32)} for i in range(4)]


def _model(tmp_path):
    path = tmp_path / "deconv.onnx"
    onnx.save(single_op_proto("ConvTranspose"), path)
    return path


def test_conv_transpose_is_kept_float_with_the_kernel_reason_and_nothing_flagged(tmp_path):
    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    op = result.graph.operations["op"]
    assert not op.quant.quantized
    assert op.quant.reason.startswith("kept float by onnxruntime: ONNX Runtime has no integer ConvTranspose kernel")
    assert not [d for d in result.diagnostics if d.code == "ort.perf.op-type"]
    exported = onnx.load(result.files[0])
    assert "DequantizeLinear" not in {n.op_type for n in exported.graph.node}


def test_conv_transpose_named_by_the_user_is_quantized_and_reported(tmp_path):
    config = {"dispatch": {"quantize_op_types": ["Conv", "ConvTranspose"]}}

    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, config=config, output=tmp_path / "q.onnx")

    assert result.graph.operations["op"].quant.quantized
    (flag,) = [d for d in result.diagnostics if d.code == "ort.perf.op-type"]
    assert flag.severity is qtool.Severity.PERFORMANCE and flag.op == "op"


def test_validation_runs_on_the_plan_and_once_on_the_result_never_in_the_export(tmp_path, monkeypatch):
    """The plan is validated as calibration starts (what it refuses stops the run before any data is read), the
    calibrated graph once; the export reads those diagnostics instead of validating again."""
    calls, exporting = [], []
    real = qtool_onnxruntime.rules.validate

    def counting(graph, options=None):
        calls.append(graph)
        return real(graph, options)

    def in_export(graph, options=None):
        exporting.append(graph)
        return real(graph, options)

    monkeypatch.setattr(qtool_onnxruntime.rules, "validate", counting)
    monkeypatch.setattr(qtool_onnxruntime.export, "validate", in_export)

    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    assert exporting == []
    assert len(calls) >= 2 and calls[-1] is result.graph and calls.count(result.graph) <= 2
