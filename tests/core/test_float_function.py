"""qtool.ir.float_function: a tensor's key changes with any attribute value its ops read, large arrays included."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from qtool.ir import from_model_proto
from qtool.ir.float_function import FloatFunctions


def _graph():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill"),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                     helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]), opset_imports=[helper.make_opsetid("", 17)])
    return from_model_proto(model)


def test_an_array_attribute_is_compared_by_all_its_values():
    graph = _graph()
    fill = graph.operations["fill"]
    values = np.arange(5000, dtype=np.float32)
    fill.attributes["value"] = values
    before = FloatFunctions(graph).key("y")
    fill.attributes["value"] = values.copy()
    assert FloatFunctions(graph).key("y") == before  # equal values, another array
    changed = values.copy()
    changed[2500] += 1  # the middle of the array, which its repr elides
    fill.attributes["value"] = changed
    assert FloatFunctions(graph).key("y") != before
    fill.attributes["value"] = values.astype(np.float64)
    assert FloatFunctions(graph).key("y") != before  # the same numbers of another type


def test_a_key_holds_every_op_upstream_once():
    graph = _graph()
    functions = FloatFunctions(graph)
    y, c = functions.key("y"), functions.key("c")
    assert len(y) == 3 and len(c) == 2  # the tensor itself, and add and fill / fill alone
    assert len(y & c) == 1  # fill's key
