"""Broken model files: external data missing or outside the model's folder, initializers that do not fit."""

import os

import numpy as np
import onnx
import pytest
import qtool
from qtool.ir import GraphError
from corpus import external
from qtool.testing.models import small_model_proto


@pytest.mark.parametrize("location, message", [
    ("missing.data", "'missing.data': no such file"),
    ("/etc/hostname", "must be a path relative to the model's folder"),
    ("../outside.data", "leaves the model's folder"),
])
def test_external_data_problems_name_the_tensor_and_file(tmp_path, location, message):
    path = external(location)(tmp_path)  # the model in tmp_path/ext, tmp_path/outside.data beside it
    with pytest.raises(GraphError, match=f"m.onnx: tensor 'conv1.weight' external data .*{message}"):
        qtool.load(path)


def test_short_external_data_file(tmp_path):
    path = external("m.data")(tmp_path)
    with open(path.parent / "m.data", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(GraphError, match="the file has 100 bytes, the tensor needs bytes up to"):
        qtool.load(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    graph = qtool.load(external("m.data")(tmp_path))
    assert graph.variables["conv1.weight"].value.shape == (4, 3, 3, 3)


def test_initializer_whose_data_does_not_fit_its_shape(tmp_path):
    model = small_model_proto()
    weight = model.graph.initializer[0]
    weight.ClearField("float_data")
    weight.raw_data = np.zeros(25, np.float32).tobytes()
    onnx.save_model(model, tmp_path / "m.onnx")
    with pytest.raises(GraphError, match=r"initializer 'conv1.weight': its data does not fit its shape \[4, 3, 3, 3\]"):
        qtool.load(tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_a_model_that_computes_nothing_or_reads_an_undefined_tensor_is_refused_as_it_loads(tmp_path):
    """No graph outputs: calibration ran, then ONNX Runtime refused the written model (kept 'for a bug report') and
    analyse ranked bogus 'exact' rows; a node reading a tensor nothing defines failed in calibration with a
    TypeError; opset 99 reached the export's version converter. Now each is refused at load, every command."""
    model = small_model_proto()
    del model.graph.output[:]
    with pytest.raises(GraphError, match="the model has no graph outputs, so it computes nothing"):
        qtool.quantize(model, "onnxruntime", tmp_path / "never-read.npz", output=tmp_path / "q.onnx")
    model = small_model_proto()
    model.graph.node[-1].input[0] = "ghost"
    onnx.save_model(model, tmp_path / "m.onnx")
    with pytest.raises(GraphError, match=r"m\.onnx: node 'fc' \(Gemm\) reads tensor 'ghost', which is no graph input"):
        qtool.quantize(tmp_path / "m.onnx", "onnxruntime", tmp_path / "never-read.npz")
    model = small_model_proto()
    model.opset_import[0].version = 99
    onnx.save_model(model, tmp_path / "m.onnx")
    with pytest.raises(GraphError, match=r"m\.onnx: the model's opset 99 .* is not one ONNX defines"):
        qtool.load(tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
