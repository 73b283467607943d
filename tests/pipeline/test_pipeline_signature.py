"""quantize(): export knobs grouped in ExportOptions, earlier keywords still accepted, the input Graph untouched."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
from qtool import ExportOptions
from qtool.testing import random_inputs, small_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = small_model(tmp_path_factory.mktemp("model") / "small.onnx")
    return path, random_inputs(qtool.load(path), count=4)


def test_a_graph_passed_in_is_copied_not_changed(model):
    path, calib = model
    graph = qtool.load(path)
    before = {name: (op.op_type, [v.name if v else None for v in op.inputs]) for name, op in graph.operations.items()}
    weights = {v.name: v.value.copy() for v in graph.parameters()}

    result = qtool.quantize(graph, "onnxruntime", calib)

    assert result.graph is not graph and result.summary["ops"]["quantized"] > 0
    assert {name: (op.op_type, [v.name if v else None for v in op.inputs])
            for name, op in graph.operations.items()} == before
    assert all(op.quant is None for op in graph.operations.values())
    assert {v.name for v in graph.parameters()} == set(weights)
    assert all(np.array_equal(v.value, weights[v.name]) and v.float_value is None for v in graph.parameters())


def test_export_options_and_the_earlier_keywords_write_the_same_file(model, tmp_path):
    path, calib = model
    grouped = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "a.onnx",
                             config={"fusion": {"remove_activations": True}},
                             export=ExportOptions(opset=19, extra={"external_data": False}))
    earlier = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "b.onnx", opset=19,
                             remove_activations=True, export_options={"external_data": False})
    assert isinstance(grouped, qtool.QuantizeResult) and not hasattr(qtool, "QuantizationResult")
    assert grouped.files[0].read_bytes() == earlier.files[0].read_bytes()
    default = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "c.onnx")
    assert default.files[0].read_bytes() != grouped.files[0].read_bytes()  # opset 19 and no Relu: another file


def test_an_unknown_keyword_fails_like_a_python_call(model):
    path, calib = model
    with pytest.raises(TypeError, match="unexpected keyword argument 'opsett'"):
        qtool.quantize(path, "onnxruntime", calib, opsett=19)


def test_calibration_warnings_arrive_as_diagnostics_like_every_pass_warning(model):
    path, calib = model
    spiked = [{name: value.copy() for name, value in sample.items()} for sample in calib]
    spiked[0]["input"].flat[0] = 1e6  # one huge value sets the range: nearly every value quantizes to zero
    result = qtool.quantize(path, "onnxruntime", spiked)
    found = [d for d in result.diagnostics if d.code == "calibration"]
    assert found and found[0].tensor == "input" and "quantize to zero" in found[0].message
    assert found[0].severity is qtool.Severity.WARNING and found[0].op is not None
