"""channel_peaks and ratio: per-channel max|x| from onnxruntime's float run (numpy arrays, no executor), or from
the executor where onnxruntime cannot run the graph (control flow); both give the same peaks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper
from qtool.passes.accuracy.outliers import channel_peaks, ratio
from qtool.passes.accuracy.running import ort_float_arrays


def _relu_model(path, with_if: bool):
    """y = Relu(x) over (n, 4, 3) inputs; with an If on a flag whose branches read y (control flow: the
    executor's job)."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 3])]
    if with_if:
        then = helper.make_graph([helper.make_node("Neg", ["y"], ["t"], name="neg")], "then", [],
                                 [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Abs", ["y"], ["e"], name="abs")], "else", [],
                                  [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
        nodes.append(helper.make_node("If", ["flag"], ["z"], name="branch", then_branch=then, else_branch=other))
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
        outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return qtool.load(path)


def _batches(with_if: bool):
    rng = np.random.default_rng(0)
    batches = []
    for n in (5, 3):
        x = (rng.standard_normal((n, 4, 3)) * np.array([1.0, 30.0, 2.0, 0.5])[None, :, None]).astype(np.float32)
        batches.append({"x": x, **({"flag": np.array(True)} if with_if else {})})
    return batches


@pytest.mark.parametrize("with_if", [False, True], ids=["onnxruntime", "executor"])
def test_peaks_are_the_largest_magnitude_per_channel_over_every_batch(tmp_path, with_if):
    graph, batches = _relu_model(tmp_path / "relu.onnx", with_if), _batches(with_if)
    assert (ort_float_arrays(graph, "cpu", batches, ["y"]) is None) is with_if  # which run computes them
    y = np.maximum(np.concatenate([b["x"] for b in batches]), 0.0)
    peaks = channel_peaks(graph, batches, {"y": 1, "x": -1})
    assert peaks["y"].dtype == np.float64 and peaks["x"].dtype == np.float64
    np.testing.assert_array_equal(peaks["y"], y.max(axis=(0, 2)))  # Relu is exact in both runs
    np.testing.assert_array_equal(peaks["x"], np.abs(np.concatenate([b["x"] for b in batches])).max(axis=(0, 1)))


def test_a_channel_axis_that_changes_length_has_no_peaks(tmp_path):
    graph = _relu_model(tmp_path / "relu.onnx", with_if=False)
    batches = _batches(with_if=False)
    assert set(channel_peaks(graph, batches, {"y": 0, "x": 1})) == {"x"}  # axis 0: 5 then 3 samples


def test_ratio_is_the_largest_over_the_lower_middle_peak():
    assert ratio(np.array([1.0, 2.0, 4.0, 40.0])) == 20.0  # median of an even count: the lower middle (2)
    assert ratio(np.array([3.0, 1.0, 30.0])) == 10.0
    assert ratio(np.zeros(4)) == 1.0
    assert ratio(np.array([0.0, 0.0, 0.0, 5.0])) == np.inf
