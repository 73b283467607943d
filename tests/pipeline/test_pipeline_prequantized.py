"""A model that arrives quantized (its own Q/DQ nodes) gets a WARNING naming what it holds; a float model none."""

from __future__ import annotations

import numpy as np
import onnx
import qtool
from qtool.testing.models import small_model_proto

SAMPLES = {"x": np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)}


def _warnings(result):
    return [d for d in result.diagnostics if d.code == "model.prequantized"]


def test_a_quantized_model_quantized_again_is_named(tmp_path):
    onnx.save(small_model_proto(), tmp_path / "float.onnx")
    first = qtool.quantize(tmp_path / "float.onnx", "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")
    assert not _warnings(first)
    held = {n.op_type for n in onnx.load(first.files[0]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= held

    again = qtool.quantize(first.files[0], "onnxruntime", SAMPLES, output=tmp_path / "qq.onnx")

    (warning,) = _warnings(again)
    written = onnx.load(first.files[0]).graph.node
    counts = {t: sum(n.op_type == t for n in written) for t in ("DequantizeLinear", "QuantizeLinear")}
    assert warning.severity is qtool.Severity.WARNING
    assert (f"the model is quantized already ({counts['DequantizeLinear']} DequantizeLinear, "
            f"{counts['QuantizeLinear']} QuantizeLinear)") in warning.message
    assert "quantize the float model instead" in warning.message
