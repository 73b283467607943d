"""Weights that several ops read (tied weights): baked once where every reader quantizes them alike, a copy per
reader where their grids differ; a state file and a text table of either reload onto the model as read."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.pipeline import plan
from qtool_text import read_table, table_text


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Two MatMuls share ``W``; two Convs share ``K`` and ``B`` (their inputs differ, so do their bias grids)."""
    folder = tmp_path_factory.mktemp("tied")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "K"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["a", "W"], ["m1"], name="mm1"),
             helper.make_node("Relu", ["m1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "W"], ["m2"], name="mm2"),
             helper.make_node("Conv", ["img", "K", "B"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r2"], name="relu2"),
             helper.make_node("Slice", ["r2", "starts", "ends", "axes"], ["s2"], name="slice"),
             helper.make_node("Conv", ["s2", "K", "B"], ["c2"], name="conv2", pads=[1, 1, 1, 1])]
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in
              (("starts", [0]), ("ends", [3]), ("axes", [1]))]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 8]),
                                              helper.make_tensor_value_info("img", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("m2", TensorProto.FLOAT, [2, 8]),
                               helper.make_tensor_value_info("c2", TensorProto.FLOAT, [2, 4, 6, 6])], inits)
    model = folder / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    calib = folder / "calib.npz"
    np.savez(calib, a=rng.standard_normal((16, 8)).astype(np.float32),
             img=rng.standard_normal((16, 3, 6, 6)).astype(np.float32))
    return model, calib


def _initializers(path) -> list[str]:
    return sorted(i.name for i in onnx.load(path).graph.initializer if i.name[0] in "WKB")


def test_tied_weights_quantized_alike_are_baked_once(tied, tmp_path):
    model, calib = tied
    qtool.quantize(model, "tensorrt", calib, output=tmp_path / "q.onnx")
    assert _initializers(tmp_path / "q.onnx") == ["B", "K", "W"]  # each held once, under the model's own name


def test_readers_on_other_grids_get_copies(tied, tmp_path):
    model, calib = tied
    config = {"override": [{"op_name": "mm2", "weight": {"bits": 4}}]}
    qtool.quantize(model, "tensorrt", calib, output=tmp_path / "q.onnx", config=config)
    assert _initializers(tmp_path / "q.onnx") == ["B", "K", "W", "W_mm1"]  # the first reader its own, the second the model's


@pytest.mark.parametrize("platform", ["tensorrt", "text", "onnxruntime"])
@pytest.mark.parametrize("override", [False, True], ids=["alike", "a copy"])
def test_a_saved_state_reloads_onto_the_model_as_read(tied, tmp_path, platform, override):
    """The state names a reader's copy of a shared weight; reloading makes that copy again (it stopped with
    "tensor 'W_mm1' in the state file, 'W' in the model")."""
    model, calib = tied
    config = {"override": [{"op_name": "mm2", "weight": {"bits": 4}}]} if override else None
    first = qtool.quantize(model, platform, calib, output=tmp_path / "a" / "q.onnx", config=config,
                           save_state=tmp_path / "s.json")
    second = qtool.quantize(model, platform, None, output=tmp_path / "b" / "q.onnx", config=config,
                            load_state=tmp_path / "s.json")
    for path in first.files:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    assert second.files


def test_a_text_table_names_the_model_s_tensors_and_reads_back(tied, tmp_path):
    """The table is applied to the model as read: a reader's private copy is named as the model names it."""
    model, calib = tied
    config = {"override": [{"op_name": "mm2", "weight": {"bits": 4}}]}
    result = qtool.quantize(model, "text", calib, output=tmp_path / "q.txt", config=config)
    written = result.files[0].read_text()
    tensors = {line.split()[2] for line in written.splitlines()[1:] if line and not line.startswith("#")}
    assert {"W", "K", "B"} <= tensors and not any("_" in name and name[0] in "WKB" for name in tensors)
    fresh = plan(model, "text", config=config).graph
    assert read_table(result.files[0], fresh)["missing"] == []
    assert table_text(fresh) == written
