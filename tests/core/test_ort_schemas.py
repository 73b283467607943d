"""qtool.ort_schemas: which ops onnxruntime knows, the common ones answered from qtool's own list by name."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper
from qtool.executor.kernel_names import BUILTIN_OP_TYPES
from qtool.ir import from_model_proto
from qtool.ort_schemas import KNOWN_BY_NAME, ort_can_run, ort_op_types


def test_every_op_the_quick_answer_knows_is_one_onnxruntime_knows():
    """The assumption the quick answer rests on, for the installed onnxruntime."""
    assert BUILTIN_OP_TYPES <= KNOWN_BY_NAME
    assert {("", name) for name in KNOWN_BY_NAME} - ort_op_types() == set()


def _op(op_type: str, domain: str):
    node = helper.make_node(op_type, ["x"], ["y"], name="op", domain=domain)
    value = helper.make_tensor_value_info
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in {domain} - {""})]
    model = helper.make_model(helper.make_graph([node], "g", [value("x", TensorProto.FLOAT, [2])],
                                                [value("y", TensorProto.FLOAT, [2])]),
                              opset_imports=opsets)
    graph = from_model_proto(model)
    return graph.operations["op"], graph


@pytest.mark.parametrize(("op_type", "domain", "known"), [
    ("Relu", "", True),
    ("Relu", "ai.onnx", True),
    ("LinearClassifier", "ai.onnx.ml", True),  # not qtool's: from onnxruntime's own list
    ("DequantizeLinear", "", True),
    ("Loop", "", True),
    ("FusedMatMul", "com.microsoft", True),  # a contrib op: from onnxruntime's own list
    ("Gelu", "com.microsoft", True),
    ("Relu2", "", False),  # no standard schema, and not onnxruntime's either
    ("MyOp", "my.domain", False),
])
def test_ort_can_run(op_type, domain, known):
    assert ort_can_run(*_op(op_type, domain)) is known


def test_a_function_the_model_defines_is_inlined():
    body = helper.make_function("my.domain", "MyOp", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                                [helper.make_opsetid("", 17)])
    node = helper.make_node("MyOp", ["x"], ["y"], name="op", domain="my.domain")
    value = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph([node], "g", [value("x", TensorProto.FLOAT, [2])],
                                                [value("y", TensorProto.FLOAT, [2])]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)],
                              functions=[body])
    graph = from_model_proto(model)
    assert [op.op_type for op in graph.operations.values()] == ["Relu"]
    assert all(ort_can_run(op, graph) for op in graph.operations.values())
