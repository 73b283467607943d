"""A float run of the model that fails on one feed of the calibration data names the file (or the item) that holds
it and what it fed: ``calib/1.npz (input 'x' float32 [2, 7]): the float model fails in ONNX Runtime at node 'mm'
(MatMul): ...``, not a pass and what ran before it; one line, exit 1, nothing written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.cli.main import main
from qtool.errors import FeedError

RNG = np.random.default_rng(0)


def _save(model: onnx.GraphProto, path) -> str:
    proto = helper.make_model(model, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(proto, path)
    return str(path)


@pytest.fixture
def shapeless(tmp_path) -> str:
    """x (float, no shape declared: the loader cannot check a feed's width) -> MatMul with an 8 x 4 weight."""
    weight = numpy_helper.from_array(RNG.standard_normal((8, 4)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "shapeless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return _save(graph, tmp_path / "shapeless.onnx")


@pytest.fixture
def lookup(tmp_path) -> str:
    """ids (int64 [N, 3]) -> Gather from a 10 x 4 table -> MatMul: an id past the table fails on its value alone."""
    table = numpy_helper.from_array(RNG.standard_normal((10, 4)).astype(np.float32), "table")
    weight = numpy_helper.from_array(RNG.standard_normal((4, 2)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
                               helper.make_node("MatMul", ["e", "W"], ["y"], name="mm")], "lookup",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2])], [table, weight])
    return _save(graph, tmp_path / "lookup.onnx")


def _folder(tmp_path, arrays: list[dict]) -> str:
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, feeds in enumerate(arrays):
        np.savez(folder / f"{i}.npz", **feeds)
    return str(folder)


def _widths(widths: list[int]) -> list[dict]:
    return [{"x": RNG.standard_normal((2, w)).astype(np.float32)} for w in widths]


def _line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or not err[-1].startswith("  "), err  # the error is one line, no traceback
    return err[-1]


CONFIGS = {  # which run meets the feed first
    "default": "",  # onnxruntime's defaults: ChannelSplit's float run over the MatMul's input, through onnxruntime
    "calibration": "[accuracy]\nchannel_split = false\noutlier_outputs = false\nfallback = false\n",  # calibration's
    # onnxruntime run, then the executor's (it starts over where onnxruntime refused a batch)
    "onnxruntime only": "[accuracy]\nchannel_split = false\noutlier_outputs = false\nfallback = false\n"
                        "[calibration]\nengine = \"onnxruntime\"\n",
}


@pytest.mark.parametrize("layout", ["samples", "feeds"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_line_names_the_file_and_the_input(shapeless, tmp_path, capsys, config, layout):
    calib = _folder(tmp_path, _widths([8, 7, 8]))
    out = tmp_path / "out.onnx"
    settings = tmp_path / "c.toml"
    settings.write_text(CONFIGS[config])
    assert main(["quantize", shapeless, "--platform", "onnxruntime", "--calib", calib, "--calib-layout", layout,
                 "--config", str(settings), "-o", str(out)]) == 1
    line = _line(capsys)
    assert line.startswith(f"qtool: error: {calib}/1.npz (input 'x' float32 [2, 7]): "), line
    assert "'mm'" in line and "batch" not in line
    if config != "calibration":  # there the executor, which started over, has the last word
        assert "the float model fails in ONNX Runtime at node 'mm' (MatMul)" in line
    assert not out.exists()


def test_python_items_are_named_by_their_index(shapeless):
    items = _widths([8, 8, 7, 8])
    with pytest.raises(FeedError, match=r"^calibration item 2 \(input 'x' float32 \[2, 7\]\): the float model fails "
                                        r"in ONNX Runtime at node 'mm' \(MatMul\)"):
        qtool.quantize(shapeless, "onnxruntime", items)
    with pytest.raises(FeedError, match=r"^calibration item 2 \(input 'x' float32 \[2, 7\]\): "):
        qtool.quantize(shapeless, "onnxruntime", items, calib_layout="feeds")


def test_of_the_files_one_batch_joins_the_one_that_fails_is_named(lookup, tmp_path, capsys):
    """Four files of 2 samples go to onnxruntime as one batch of 8; an id past the table in the third fails the
    batch, and each file's samples run alone to find it."""
    ids = [RNG.integers(0, 10, (2, 3)) for _ in range(4)]
    ids[2][1, 2] = 99
    calib = _folder(tmp_path, [{"ids": a} for a in ids])
    assert main(["quantize", lookup, "--platform", "onnxruntime", "--calib", calib, "-o",
                 str(tmp_path / "out.onnx")]) == 1
    line = _line(capsys)
    assert line.startswith(f"qtool: error: {calib}/2.npz (input 'ids' int64 [2, 3]): "), line
    assert "99" in line


def test_samples_of_one_large_array_are_named_by_their_range(lookup):
    ids = RNG.integers(0, 10, (80, 3))
    ids[70, 0] = 99
    with pytest.raises(FeedError, match=r"^calibration arrays samples 64-79 \(input 'ids' int64 \[16, 3\]\): "):
        qtool.quantize(lookup, "onnxruntime", {"ids": ids}, config={"calibration": {"batch_size": 32}})


def test_a_loop_body_recorded_over_the_data_names_the_file(tmp_path, capsys):
    """A model with a Loop first runs over the data to record its body's feeds (onnxruntime, then the executor)."""
    from qtool.testing.control_flow import control_flow_model

    proto = control_flow_model("loop")
    proto.graph.input[0].type.tensor_type.ClearField("shape")  # x's width (6) no longer declared
    model = tmp_path / "loop.onnx"
    onnx.save(proto, model)
    calib = _folder(tmp_path, [{"x": RNG.standard_normal((2, w)).astype(np.float32)} for w in (6, 5, 6)])
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", calib, "-o",
                 str(tmp_path / "out.onnx")]) == 1
    assert _line(capsys).startswith(f"qtool: error: {calib}/1.npz (input 'x' float32 [2, 5]): node 'dense1' (MatMul) "
                                    "failed: ")
