"""Tiny ONNX models and inputs made on the fly, for plugin tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SMALL_MODEL_INPUT = "input"
SMALL_MODEL_SHAPE = (1, 3, 8, 8)


def small_model_proto(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> Conv, a residual Add, pooling, Gemm: 5 outputs from a 3x8x8 image.

    The Relu output is read by two ops (a second Conv and the Add), so exporters
    meet a tensor with several readers. Weights come from ``seed``.
    """
    rng = np.random.default_rng(seed)

    def param(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    params = [param("conv1.weight", 4, 3, 3, 3), param("conv1.bias", 4), param("conv2.weight", 4, 4, 1, 1),
              param("conv2.bias", 4), param("fc.weight", 5, 4), param("fc.bias", 5)]
    nodes = [
        helper.make_node("Conv", [SMALL_MODEL_INPUT, "conv1.weight", "conv1.bias"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_out"], ["relu_out"], name="relu"),
        helper.make_node("Conv", ["relu_out", "conv2.weight", "conv2.bias"], ["conv2_out"], name="conv2"),
        helper.make_node("Add", ["relu_out", "conv2_out"], ["add_out"], name="add"),
        helper.make_node("GlobalAveragePool", ["add_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten"),
        helper.make_node("Gemm", ["flat_out", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "qtool_small_model",
        [helper.make_tensor_value_info(SMALL_MODEL_INPUT, TensorProto.FLOAT, list(SMALL_MODEL_SHAPE))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5])], params)
    opsets = [helper.make_opsetid("", 17)]
    # the lowest IR version that holds opset 17, so that older onnxruntime releases load it too
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qtool.testing",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def pooled_model_proto(seed: int = 0) -> onnx.ModelProto:
    """Conv -> MaxPool -> Flatten -> Gemm on a 3x8x8 image (opset 21): a passive op that keeps the channel
    layout, then one that does not. Tensors: x, c1, mp, fl, y."""
    rng = np.random.default_rng(seed)

    def param(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c1"], ["mp"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["mp"], ["fl"], name="flatten"),
             helper.make_node("Gemm", ["fl", "w2", "b2"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "qtool_pooled_model",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [param("w1", 4, 3, 3, 3), param("b1", 4), param("w2", 5, 64), param("b2", 5)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def small_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write :func:`small_model_proto` to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(small_model_proto(seed), path)
    return path


def matmul_sqrt_model(path: str | os.PathLike) -> Path:
    """y = Sqrt(x @ W): NaN wherever x @ W is negative, in the float model as in the quantized one, and where
    quantization moves a value across 0 in one of them only (onnx's own test model
    pytorch-operator/test_operator_sqrt is a Sqrt of negatives)."""
    weight = np.random.default_rng(3).standard_normal((16, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Sqrt", ["m"], ["y"])], "sqrt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return Path(path)


def masked_attention_model(path: str | os.PathLike) -> Path:
    """A decoder's attention in small: scores ``(x Wq)(x Wk)^T`` plus a causal mask of float32's lowest value
    (``masked``, which calibration keeps float), Softmax, times ``x``."""
    rng = np.random.default_rng(0)
    mask = np.triu(np.full((4, 4), np.finfo(np.float32).min, dtype=np.float32), k=1)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
             helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
             helper.make_node("Add", ["scores", "mask"], ["masked"], name="apply_mask"),
             helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["probs", "x"], ["y"], name="mix")]
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), name) for name in ("wq", "wk")]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8])],
                              [*weights, numpy_helper.from_array(mask, "mask")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return Path(path)


def token_matmuls_model(path: str | os.PathLike, hidden: int = 64, wide: int = 256, seed: int = 0) -> Path:
    """Three MatMuls over ``x`` [1, tokens, hidden], each token on its own: up to ``wide``, on the tokens
    flattened to [tokens, wide] back down, made [1, tokens, hidden] again by a Reshape to ``Shape(x)``, then
    [hidden, hidden]. The first weight outweighs the others: cut after it, the next segment reads the shape
    vector beside the activations (the first MatMul reads ``x`` through a Reshape to the same vector, so the
    vector is made before the cut, as a decoder's shared shape vectors are), and its Reshape runs before its last
    MatMul."""
    rng = np.random.default_rng(seed)

    def weight(name: str, rows: int, columns: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal((rows, columns)).astype(np.float32) / rows ** 0.5, name)

    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Reshape", ["x", "shape"], ["xs"], name="reshape"),
             helper.make_node("MatMul", ["xs", "w1"], ["a"], name="mm1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w2"], ["b"], name="mm2"),
             helper.make_node("Reshape", ["b", "shape"], ["u"], name="unflatten"),
             helper.make_node("MatMul", ["u", "w3"], ["y"], name="mm3")]
    graph = helper.make_graph(nodes, "token_matmuls",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "tokens", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "tokens", hidden])],
                              [weight("w1", hidden, wide), weight("w2", wide, hidden), weight("w3", hidden, hidden),
                               numpy_helper.from_array(np.array([-1, wide], np.int64), "flat")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return Path(path)


def random_inputs(graph, count: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` input dicts for ``graph`` (a qtool Graph) drawn from N(0, 1); symbolic dims become 1."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = {}
        for var in graph.inputs:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in (var.shape or [])]
            sample[var.name] = rng.standard_normal(shape).astype(var.dtype or np.float32)
        samples.append(sample)
    return samples


def calibration_file(graph, path: str | os.PathLike, count: int = 8, seed: int = 0) -> Path:
    """An .npz of :func:`random_inputs` for ``graph`` (one array per input, samples on the first axis)."""
    samples = random_inputs(graph, count, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.concatenate([s[name] for s in samples]) for name in samples[0]})
    return path
