"""Models with If, Loop and Scan: imported and exported with their subgraphs intact, run by the executor,
quantized around their subgraphs and exported for onnxruntime (compute inside bodies:
tests/pipeline/test_pipeline_control_flow_bodies.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto, to_model_proto

FEATURES, HIDDEN, OUT = 6, 8, 4
_rng = np.random.default_rng(0)
WEIGHTS = {"w1": _rng.standard_normal((FEATURES, HIDDEN)), "w2": _rng.standard_normal((HIDDEN, OUT)),
           "half": np.array(0.5), "shift": _rng.standard_normal(HIDDEN) * 0.1}


def _vi(name, shape=None, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _if_node():
    """Relu(h) when the mean of h is positive, else h * half: both branches read h and half from outside."""
    then = helper.make_graph([helper.make_node("Relu", ["h"], ["then_out"])], "then", [], [_vi("then_out")])
    other = helper.make_graph([helper.make_node("Mul", ["h", "half"], ["else_out"])], "else", [], [_vi("else_out")])
    return [helper.make_node("ReduceMean", ["h"], ["mean"], "mean", keepdims=0),
            helper.make_node("Greater", ["mean", "zero"], ["positive"], "positive"),
            helper.make_node("If", ["positive"], ["branched"], "branch", then_branch=then, else_branch=other)]


def _loop_node():
    """Three times: v = Tanh(v) + shift (shift read from outside)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Tanh", ["v_in"], ["t"]),
         helper.make_node("Add", ["t", "shift"], ["v_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in")],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out")])
    return [helper.make_node("Loop", ["trips", "", "h"], ["branched"], "loop", body=body)]


def _scan_node():
    """Running sum over the feature rows of h (batch kept as the scanned axis 0)."""
    body = helper.make_graph([helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
                              helper.make_node("Mul", ["acc_out", "half"], ["scanned"])],
                             "scan_body", [_vi("acc_in", [HIDDEN]), _vi("row", [HIDDEN])],
                             [_vi("acc_out", [HIDDEN]), _vi("scanned", [HIDDEN])])
    return [helper.make_node("Scan", ["zeros", "h"], ["acc", "branched"], "scan", body=body, num_scan_inputs=1)]


def model(kind: str) -> onnx.ModelProto:
    """x -> MatMul w1 -> (If | Loop | Scan) -> MatMul w2 -> y."""
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in WEIGHTS.items()]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(3, np.int64), "trips"),
              numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "zeros")]
    flow = {"if": _if_node, "loop": _loop_node, "scan": _scan_node}[kind]()
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "dense1"), *flow,
             helper.make_node("MatMul", ["branched", "w2"], ["y"], "dense2")]
    graph = helper.make_graph(nodes, kind, [_vi("x", ["batch", FEATURES])], [_vi("y", ["batch", OUT])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort(model_or_path, x):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _x(count, seed=1, offset=0.0):
    return (np.random.default_rng(seed).standard_normal((count, FEATURES)) + offset).astype(np.float32)


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_subgraphs_survive_import_and_export(kind):
    original = model(kind)
    graph = from_model_proto(original)
    flow = next(op for op in graph.operations.values() if op.op_type in ("If", "Loop", "Scan"))
    assert graph.variables["h"] in flow.inputs  # an input the subgraphs read: producer ordered before
    exported = to_model_proto(graph)
    onnx.checker.check_model(exported, full_check=True)
    node = next(n for n in exported.graph.node if n.name == flow.name)
    before = next(n for n in original.graph.node if n.name == flow.name)
    assert list(node.input) == list(before.input) and node.attribute == before.attribute


def test_renamed_outer_tensors_are_renamed_inside_the_subgraphs():
    graph = from_model_proto(model("if"))
    graph.rename_variable(graph.variables["h"], "hidden")
    exported = to_model_proto(graph)
    onnx.checker.check_model(exported, full_check=True)
    x = _x(3)
    np.testing.assert_allclose(_ort(exported, x), _ort(model("if"), x), rtol=1e-6)
    assert graph.operations["branch"].attributes["then_branch"].node[0].input[0] == "h"  # the IR's copy untouched


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
@pytest.mark.parametrize("offset", [2.0, -2.0])  # both branches of the If
def test_executor_runs_control_flow_like_onnxruntime(kind, offset):
    executor = TorchExecutor(from_model_proto(model(kind)))
    executor.quantize = False
    x = _x(4, offset=offset)
    np.testing.assert_allclose(executor.forward([x])[0], _ort(model(kind), x), rtol=1e-5, atol=1e-5)


def test_a_body_that_needs_an_outer_weight_s_shape_runs():
    """A body's Resize to sizes Concat(Shape(x)[:2], hw), hw an initializer of the main graph (tf2onnx's
    CropAndResize loop): declared with symbolic dims in the node's own session, ONNX Runtime's shape inference
    refused the body ('Number of elements of input 'sizes' (0) must be same as rank of input 'X' (4)')."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Shape", ["x"], ["shape"], end=2),
         helper.make_node("Concat", ["shape", "hw"], ["sizes"], axis=0),
         helper.make_node("Resize", ["x", "", "", "sizes"], ["resized"], mode="nearest")],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL)],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("resized")])
    graph = helper.make_graph([helper.make_node("Loop", ["trips", ""], ["y"], "flow", body=body)], "resize_loop",
                              [_vi("x", ["N", 2, 4, 4])], [_vi("y")],
                              [numpy_helper.from_array(np.array(1, np.int64), "trips"),
                               numpy_helper.from_array(np.array([8, 8], np.int64), "hw")])
    resize_loop = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).random((3, 2, 4, 4), dtype=np.float32)

    (y,) = TorchExecutor(from_model_proto(resize_loop)).forward({"x": x})

    assert y.shape == (1, 3, 2, 8, 8)
    np.testing.assert_array_equal(y, _ort(resize_loop, x))


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_quantized_around_the_subgraphs_with_defaults(kind, tmp_path):
    path, output = tmp_path / f"{kind}.onnx", tmp_path / f"{kind}_q.onnx"
    onnx.save(model(kind), path)

    result = qtool.quantize(path, "onnxruntime", {"x": _x(32, seed=3)}, output=output)

    ops = result.graph.operations
    flow = ops[{"if": "branch", "loop": "loop", "scan": "scan"}[kind]]
    assert not flow.quant.quantized and flow.quant.reason.startswith("control flow: runs float through ONNX Runtime")
    assert "0/0 compute ops quantized" in flow.quant.reason  # these bodies hold no compute op
    assert ops["dense1"].quant.quantized and ops["dense2"].quant.quantized
    exported = onnx.load(output)
    producers = {o: n.op_type for n in exported.graph.node for o in n.output}
    for dense in (n for n in exported.graph.node if n.op_type == "MatMul"):
        assert [producers.get(i) for i in dense.input] == ["DequantizeLinear", "DequantizeLinear"]
    x = _x(8, seed=4)
    reference, quantized = _ort(path, x), _ort(output, x)
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2))
    assert 20 < snr_db < 80, snr_db  # close to float, and not float
