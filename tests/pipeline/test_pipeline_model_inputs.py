"""A model whose layers sit in ONNX local functions (torch's export_modules_as_functions, hand-written
FunctionProtos): the functions are inlined on import, so their compute ops are counted and quantized; a model
given as an onnx.ModelProto."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper


def _model(path, width=16):
    """x -> Block(x, w1) -> Block(·, w2) -> Gemm(w3), Block(x, w) = Relu(Gemm(x, w)) + x, a local function."""
    block = helper.make_function(
        "local", "Block", ["x", "w"], ["y"],
        [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Add", ["r", "x"], ["y"])],
        opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 4, f"w{i}")
               for i in (1, 2, 3)]
    nodes = [helper.make_node("Block", ["x", "w1"], ["b1"], domain="local", name="block1"),
             helper.make_node("Block", ["b1", "w2"], ["b2"], domain="local", name="block2"),
             helper.make_node("Gemm", ["b2", "w3"], ["out"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", width])],
                              initializer=weights)
    model = helper.make_model(graph, functions=[block], opset_imports=[helper.make_opsetid("", 17),
                                                                        helper.make_opsetid("local", 1)])
    onnx.save(model, path)
    return path


def test_compute_ops_inside_local_functions_are_quantized(tmp_path):
    model = _model(tmp_path / "blocks.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(8)]
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx")

    assert result.summary["coverage"]["compute_ops"] == 3 and result.summary["coverage"]["compute_ops_quantized"] == 3
    written = onnx.load(result.files[0])
    assert not written.functions
    producers = {out: node.op_type for node in written.graph.node for out in node.output}
    gemms = [node for node in written.graph.node if node.op_type == "Gemm"]
    assert len(gemms) == 3 and all(producers[node.input[0]] == "DequantizeLinear" for node in gemms)
    float_session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    expected, got = float_session.run(None, samples[0])[0], quantized.run(None, samples[0])[0]
    assert 10 * np.log10(np.sum(expected ** 2) / np.sum((got - expected) ** 2)) > 30


def test_a_model_proto_is_taken_as_is_and_anything_else_named(tmp_path):
    model = _model(tmp_path / "blocks.onnx")
    samples = [{"x": np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)} for _ in range(4)]
    from_proto = qtool.quantize(onnx.load(model), "onnxruntime", samples)
    from_path = qtool.quantize(model, "onnxruntime", samples)
    assert from_proto.summary["coverage"] == from_path.summary["coverage"]
    with pytest.raises(qtool.QtoolError, match="model: expected the path of an ONNX file, an onnx.ModelProto or a "
                                               "qtool Graph, got bytes"):
        qtool.quantize(model.read_bytes(), "onnxruntime", samples)
