"""Small models with control flow for tests: x -> MatMul w1 -> (If | Loop | Scan, a MatMul in each body) ->
MatMul w2 -> y, with seeded weights (``WEIGHTS``) a test can recompute the bodies' feeds from."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, OUT, TRIPS = 6, 8, 4, 3
_rng = np.random.default_rng(0)
WEIGHTS = {name: (_rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
           for name, shape in (("w1", (FEATURES, HIDDEN)), ("w2", (HIDDEN, OUT)), ("w_then", (HIDDEN, HIDDEN)),
                               ("w_body", (HIDDEN, HIDDEN)))}
W_INNER = (_rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)


def value_info(name, shape=None, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _if_nodes():
    """Branches on the sign of h's mean: then MatMul(h, w_then) (an outer weight), else MatMul(Relu(h), w_else)
    (the branch's own initializer)."""
    then = helper.make_graph([helper.make_node("MatMul", ["h", "w_then"], ["then_out"], "then_mm")], "then", [],
                             [value_info("then_out")])
    other = helper.make_graph([helper.make_node("Relu", ["h"], ["r"]),
                               helper.make_node("MatMul", ["r", "w_else"], ["else_out"], "else_mm")], "else", [],
                              [value_info("else_out")], [numpy_helper.from_array(W_INNER, "w_else")])
    return [helper.make_node("ReduceMean", ["h"], ["mean"], "mean", keepdims=0),
            helper.make_node("Greater", ["mean", "zero"], ["positive"], "positive"),
            helper.make_node("If", ["positive"], ["flowed"], "flow", then_branch=then, else_branch=other)]


def loop_nodes():
    """TRIPS times v = Tanh(MatMul(v, w_body))."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["v_in", "w_body"], ["m"], "body_mm"), helper.make_node("Tanh", ["m"], ["v_out"])],
        "body",
        [value_info("i", [], TensorProto.INT64), value_info("cond_in", [], TensorProto.BOOL), value_info("v_in")],
        [value_info("cond_out", [], TensorProto.BOOL), value_info("v_out")])
    return [helper.make_node("Loop", ["trips", "", "h"], ["flowed"], "flow", body=body)]


def _scan_nodes():
    """An RNN over the rows of h: acc = Tanh(MatMul(acc, w_body) + row), every acc scanned out."""
    body = helper.make_graph([helper.make_node("MatMul", ["acc_in", "w_body"], ["m"], "body_mm"),
                              helper.make_node("Add", ["m", "row"], ["s"]),
                              helper.make_node("Tanh", ["s"], ["acc_out"]),
                              helper.make_node("Identity", ["acc_out"], ["scanned"])],
                             "scan_body", [value_info("acc_in", [HIDDEN]), value_info("row", [HIDDEN])],
                             [value_info("acc_out", [HIDDEN]), value_info("scanned", [HIDDEN])])
    return [helper.make_node("Scan", ["zeros", "h"], ["acc", "flowed"], "flow", body=body, num_scan_inputs=1)]


def control_flow_model(kind: str) -> onnx.ModelProto:
    """x -> MatMul w1 -> (If | Loop | Scan, a MatMul in each body) -> MatMul w2 -> y."""
    inits = [numpy_helper.from_array(v, k) for k, v in WEIGHTS.items()]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(TRIPS, np.int64), "trips"),
              numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "zeros")]
    flow = {"if": _if_nodes, "loop": loop_nodes, "scan": _scan_nodes}[kind]()
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "dense1"), *flow,
             helper.make_node("MatMul", ["flowed", "w2"], ["y"], "dense2")]
    graph = helper.make_graph(nodes, kind, [value_info("x", ["batch", FEATURES])], [value_info("y", ["batch", OUT])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
