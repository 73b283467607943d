"""Forms of opset 8 and earlier that compute otherwise than their op's name does now are refused in one line, before
any data is read: the executor (numpy broadcasting) would run them wrongly, and neither ONNX Runtime nor ONNX's
version converter takes them (found by a user-style probe of opsets 6-24: 'size of tensor a (8) must match')."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.errors import QtoolError
from qtool.executor.support import check_supported


def _model(tmp_path, node, constants: dict, opset: int):
    weight = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], "conv"), node], "legacy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5, 5])],
        [numpy_helper.from_array(weight, "w"), *(numpy_helper.from_array(a, k) for k, a in constants.items())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    for name in ["w", *constants]:  # IR 3 lists every initializer as an input
        model.graph.input.append(helper.make_tensor_value_info(
            name, TensorProto.FLOAT, list(next(i for i in model.graph.initializer if i.name == name).dims)))
    path = tmp_path / f"legacy{opset}.onnx"
    onnx.save(model, path)
    return path


def _refused(path) -> str:
    pulled = []
    samples = (pulled.append(i) or {"x": np.ones((2, 3, 5, 5), np.float32)} for i in range(4))
    with pytest.raises(QtoolError) as refused:
        qtool.quantize(path, "onnxruntime", samples, output=path.with_name("q.onnx"))
    assert not pulled and not path.with_name("q.onnx").exists()
    return str(refused.value)


def test_opset_6_broadcast_from_an_axis_is_refused(tmp_path):
    bias = {"b": np.arange(4, dtype=np.float32)}
    node = helper.make_node("Add", ["c", "b"], ["y"], "bias_add", broadcast=1, axis=1)
    message = _refused(_model(tmp_path, node, bias, 6))
    assert message.startswith("node 'bias_add' (Add): opset 6's broadcast of its second operand from axis 1; ")
    assert message.endswith("export the model at a newer opset")


def test_opset_6_broadcast_that_numpy_broadcasting_matches_runs(tmp_path):
    """From the last axes (axis = rank difference), the legacy broadcast is numpy's: nothing to refuse."""
    row = {"b": np.arange(5, dtype=np.float32)}
    node = helper.make_node("Add", ["c", "b"], ["y"], "row_add", broadcast=1, axis=3)
    check_supported(qtool.load(_model(tmp_path, node, row, 6)))


def test_batch_normalization_with_statistics_per_element_is_refused(tmp_path):
    per_element = {k: np.ones((4, 5, 5), np.float32) for k in ("scale", "bias", "mean", "var")}
    node = helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], "bn", spatial=0)
    message = _refused(_model(tmp_path, node, per_element, 8))
    assert message.startswith("node 'bn' (BatchNormalization): statistics per element (spatial = 0, opset 8 and ")
