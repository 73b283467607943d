"""channel_peaks and ratio: per-channel max|x| from onnxruntime's float run (numpy arrays, no executor), or from
the executor where onnxruntime cannot run the graph (an op only qtool runs); both give the same peaks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper
from qtool.passes.accuracy.outliers import channel_peaks, ratio
from qtool.passes.accuracy.running import ort_float_arrays


def _relu_model(path, copy_op=None):
    """y = Relu(x) over (n, 4, 3) inputs; with ``copy_op`` (domain, op_type) a copy of y that only qtool's
    executor runs follows it (onnxruntime cannot run the graph: the executor's job)."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    opsets = [helper.make_opsetid("", 17)]
    output = "y"
    if copy_op is not None:
        nodes.append(helper.make_node(copy_op[1], ["y"], ["z"], name="copy", domain=copy_op[0]))
        opsets.append(helper.make_opsetid(copy_op[0], 1))
        output = "z"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", 4, 3])])
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return qtool.load(path)


def _batches():
    rng = np.random.default_rng(0)
    batches = []
    for n in (5, 3):
        x = (rng.standard_normal((n, 4, 3)) * np.array([1.0, 30.0, 2.0, 0.5])[None, :, None]).astype(np.float32)
        batches.append({"x": x})
    return batches


@pytest.mark.parametrize("executor", [False, True], ids=["onnxruntime", "executor"])
def test_peaks_are_the_largest_magnitude_per_channel_over_every_batch(tmp_path, executor, request):
    copy_op = request.getfixturevalue("qtool_only_op") if executor else None
    graph, batches = _relu_model(tmp_path / "relu.onnx", copy_op), _batches()
    assert (ort_float_arrays(graph, "cpu", batches, ["y"]) is None) is executor  # which run computes them
    y = np.maximum(np.concatenate([b["x"] for b in batches]), 0.0)
    peaks = channel_peaks(graph, batches, {"y": 1, "x": -1})
    assert peaks["y"].dtype == np.float64 and peaks["x"].dtype == np.float64
    np.testing.assert_array_equal(peaks["y"], y.max(axis=(0, 2)))  # Relu is exact in both runs
    np.testing.assert_array_equal(peaks["x"], np.abs(np.concatenate([b["x"] for b in batches])).max(axis=(0, 1)))


def test_a_channel_axis_that_changes_length_has_no_peaks(tmp_path):
    graph = _relu_model(tmp_path / "relu.onnx")
    batches = _batches()
    assert set(channel_peaks(graph, batches, {"y": 0, "x": 1})) == {"x"}  # axis 0: 5 then 3 samples


def test_ratio_is_the_largest_over_the_lower_middle_peak():
    assert ratio(np.array([1.0, 2.0, 4.0, 40.0])) == 20.0  # median of an even count: the lower middle (2)
    assert ratio(np.array([3.0, 1.0, 30.0])) == 10.0
    assert ratio(np.zeros(4)) == 1.0
    assert ratio(np.array([0.0, 0.0, 0.0, 5.0])) == np.inf
