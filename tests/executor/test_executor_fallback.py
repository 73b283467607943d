"""Ops without an executor kernel run in float through onnxruntime; the model around them is quantized."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.cli.main import main
from qtool.executor import FALLBACK_REASON, TorchExecutor, has_kernel, ort_fallback_ops, unsupported_ops
from qtool.ir import from_model_proto

VOCAB, EMBED, HIDDEN, TAGS, SEQ = 30, 8, 12, 5, 7


def _run_ort(model, feeds):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def tagger(with_custom_op: bool) -> onnx.ModelProto:
    """ids [batch, seq] -> embedding Gather -> LSTM -> (com.microsoft QuickGelu) -> tag MatMul."""
    rng = np.random.default_rng(0)
    weights = {
        "embedding": rng.standard_normal((VOCAB, EMBED)), "W": rng.standard_normal((1, 4 * HIDDEN, EMBED)) * 0.4,
        "R": rng.standard_normal((1, 4 * HIDDEN, HIDDEN)) * 0.4, "B": rng.standard_normal((1, 8 * HIDDEN)) * 0.1,
        "tags": rng.standard_normal((HIDDEN, TAGS)), "axis1": np.array([1]),
    }
    inits = [numpy_helper.from_array(v.astype(np.int64 if k == "axis1" else np.float32), k) for k, v in weights.items()]
    features = "gelu" if with_custom_op else "hidden"
    nodes = [helper.make_node("Gather", ["embedding", "ids"], ["embedded"], "embed"),
             helper.make_node("Transpose", ["embedded"], ["steps"], "to_steps", perm=[1, 0, 2]),
             helper.make_node("LSTM", ["steps", "W", "R", "B"], ["Y"], "lstm", hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["Y", "axis1"], ["y"], "squeeze"),
             helper.make_node("Transpose", ["y"], ["hidden"], "to_batch", perm=[1, 0, 2])]
    if with_custom_op:
        nodes.append(helper.make_node("QuickGelu", ["hidden"], ["gelu"], "quick_gelu",
                                      domain="com.microsoft", alpha=1.5))
    nodes.append(helper.make_node("MatMul", [features, "tags"], ["logits"], "tag"))
    graph = helper.make_graph(nodes, "tagger", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", SEQ])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", SEQ, TAGS])], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _ids(count, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (count, SEQ)).astype(np.int64)


def test_op_without_kernel_runs_through_onnxruntime():
    model = tagger(with_custom_op=True)
    graph = from_model_proto(model)
    assert not has_kernel(graph.operations["quick_gelu"]) and has_kernel(graph.operations["lstm"])
    assert ort_fallback_ops(graph) == {("com.microsoft", "QuickGelu"): ["quick_gelu"]} and unsupported_ops(graph) == {}
    ids = _ids(3)
    executor = TorchExecutor(graph)
    executor.quantize = False
    got = executor.forward({"ids": ids})[0]
    np.testing.assert_allclose(got, _run_ort(model, {"ids": ids})[0], rtol=1e-5, atol=1e-5)
    seen = []
    executor.add_hook(lambda op, ins, outs: seen.append((op.name, outs[0].shape)))
    executor.forward({"ids": _ids(5, seed=1)[:, :]})  # another batch size reuses the session built for the types
    assert ("quick_gelu", (5, SEQ, HIDDEN)) in seen


def test_a_contrib_op_whose_shape_inference_needs_its_weights_shapes_runs_through_onnxruntime():
    """EmbedLayerNormalization's shape inference refuses a word_embedding of unknown dimensions: a parameter's
    input to the one-node model is declared with its whole shape (TensorRT's and AIMET's runs of an ORT-optimized
    BERT stopped there)."""
    rng = np.random.default_rng(0)
    weights = {"words": rng.standard_normal((VOCAB, EMBED)), "positions": rng.standard_normal((SEQ, EMBED)),
               "gamma": np.ones(EMBED), "beta": np.zeros(EMBED)}
    node = helper.make_node("EmbedLayerNormalization", ["ids", "", "words", "positions", "", "gamma", "beta"],
                            ["embedded", "mask_index"], "embed", domain="com.microsoft", epsilon=1e-5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["b", SEQ])],
                              [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["b", SEQ, EMBED])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    executor = TorchExecutor(from_model_proto(model))
    executor.quantize = False
    ids = _ids(3).astype(np.int32)
    np.testing.assert_allclose(executor.forward({"ids": ids})[0], _run_ort(model, {"ids": ids})[0], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("with_custom_op", [False, True])
def test_tagger_quantizes_around_the_lstm_and_runs_in_onnxruntime(with_custom_op, tmp_path):
    model_path, output = tmp_path / "tagger.onnx", tmp_path / "tagger_q.onnx"
    onnx.save(tagger(with_custom_op), model_path)

    result = qtool.quantize(model_path, "onnxruntime", {"ids": _ids(16)}, output=output)

    reasons = {op.name: (op.quant.quantized, op.quant.reason) for op in result.graph.operations.values()}
    assert reasons["tag"][0] and not reasons["lstm"][0]
    if with_custom_op:
        assert reasons["quick_gelu"] == (False, FALLBACK_REASON)
    exported = onnx.load(output)
    producers = {o: n for n in exported.graph.node for o in n.output}
    matmul = next(n for n in exported.graph.node if n.op_type == "MatMul")
    assert [producers[i].op_type for i in matmul.input] == ["DequantizeLinear", "DequantizeLinear"]
    assert any(n.op_type == "LSTM" for n in exported.graph.node)
    ids = _ids(4, seed=2)
    reference, quantized = _run_ort(model_path, {"ids": ids})[0], _run_ort(output, {"ids": ids})[0]
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2))
    assert 20 < snr_db < 80, snr_db  # close to float, and not float


def test_explain_says_why_the_op_stays_float(tmp_path, capsys):
    path = tmp_path / "tagger.onnx"
    onnx.save(tagger(with_custom_op=True), path)
    assert main(["explain", str(path), "--platform", "onnxruntime", "--json"]) == 0
    ops = {op["name"]: op for op in json.loads(capsys.readouterr().out)["ops"]}
    assert ops["quick_gelu"]["quantized"] is False and ops["quick_gelu"]["reason"] == FALLBACK_REASON
    assert ops["tag"]["quantized"] is True


def test_which_ops_run_is_known_without_importing_torch(tmp_path):
    """quantize checks every op before calibration: by name for the op library's kernels, by ONNX Runtime's schemas
    for the rest, in a process that never imports torch; nothing runs an op unknown to both."""
    model = tagger(with_custom_op=True)
    model.graph.node.append(helper.make_node("Frobnicate", ["logits"], ["odd"], "odd_one", domain="com.example"))
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    code = ("import sys, qtool; from qtool.executor.support import check_supported, has_kernel, ort_fallback_ops\n"
            f"graph = qtool.load({str(path)!r})\n"
            "assert has_kernel(graph.operations['lstm']) and not has_kernel(graph.operations['quick_gelu'])\n"
            "assert ort_fallback_ops(graph) == {('com.microsoft', 'QuickGelu'): ['quick_gelu']}\n"
            "try:\n    check_supported(graph)\nexcept qtool.QtoolError as exc:\n    print(exc)\n"
            "print('torch' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    error, imported = ran.stdout.strip().splitlines()
    assert "Frobnicate" in error and "odd_one" in error and "QuickGelu" not in error
    assert imported == "False"
