"""Run one ONNX node in onnxruntime and through qtool's torch op and compare.

``QTOOL_TEST_DEVICE=cuda pytest tests/executor`` runs qtool's side on a GPU
(onnxruntime stays on the CPU): the CUDA check of scripts/device_check.sh.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from qtool.executor.ops import OpContext, get_op
from qtool.executor.precision import full_float32

TEST_DEVICE = torch.device(os.environ.get("QTOOL_TEST_DEVICE", "cpu"))
FLOAT_TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-7, np.dtype(np.float16): 1e-3}


def make_model(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any],
    opset: int,
    num_outputs: int,
    initializers: Sequence[int],
) -> onnx.ModelProto:
    """Single-node model; inputs listed in ``initializers`` become constants."""
    names = ["" if a is None else f"x{i}" for i, a in enumerate(inputs)]
    outputs = [f"y{i}" for i in range(num_outputs)]
    node = helper.make_node(op_type, names, outputs, **attrs)
    graph_inputs, inits = [], []
    for i, (name, value) in enumerate(zip(names, inputs, strict=True)):
        if value is None:
            continue
        if i in initializers:
            inits.append(numpy_helper.from_array(value, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, value.shape))
    graph_outputs = [onnx.ValueInfoProto(name=name) for name in outputs]
    graph = helper.make_graph([node], "single_op", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def run_ort(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None], initializers: Sequence[int]) -> list:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {f"x{i}": a for i, a in enumerate(inputs) if a is not None and i not in initializers}
    return session.run(None, feeds)


def decode_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Attributes as the executor hands them to ops: python values, numpy tensors."""
    decoded = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        decoded[attr.name] = value
    return decoded


def run_torch(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None], opset: int) -> list[torch.Tensor]:
    node = model.graph.node[0]
    ctx = OpContext(node.op_type, node.name, opset, len(node.output), TEST_DEVICE)
    tensors = [None if a is None else torch.from_numpy(np.array(a)).to(TEST_DEVICE) for a in inputs]
    with full_float32(TEST_DEVICE):
        return get_op(node.op_type)(ctx, decode_attrs(node), tensors)


def assert_same(expected: np.ndarray, actual: torch.Tensor, rtol: float | None, atol: float | None) -> None:
    if actual.dtype == torch.float8_e4m3fn:  # onnxruntime hands float 8 back as raw bytes
        actual = actual.view(torch.uint8)
    got = actual.detach().cpu().numpy()
    assert got.dtype == expected.dtype, f"dtype {got.dtype} != {expected.dtype}"
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    if expected.dtype.kind == "f":
        tol = FLOAT_TOLERANCE[expected.dtype]
        np.testing.assert_allclose(got, expected, rtol=rtol or tol, atol=atol or tol)
    else:
        np.testing.assert_array_equal(got, expected)


def check_op(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    opset: int,
    num_outputs: int = 1,
    initializers: Sequence[int] = (),
    rtol: float | None = None,
    atol: float | None = None,
) -> list[np.ndarray]:
    """Assert qtool's op matches onnxruntime on one node; return ORT's outputs."""
    inputs = [None if a is None else np.asarray(a) for a in inputs]
    model = make_model(op_type, inputs, attrs or {}, opset, num_outputs, initializers)
    expected = run_ort(model, inputs, initializers)
    actual = run_torch(model, inputs, opset)
    assert len(actual) == num_outputs, f"{len(actual)} outputs returned, {num_outputs} declared"
    for i, (exp, act) in enumerate(zip(expected, actual, strict=True)):
        try:
            assert_same(np.asarray(exp), act, rtol, atol)
        except AssertionError as err:
            raise AssertionError(f"{op_type} output {i}: {err}") from None
    return expected


def randn(*shape: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Deterministic normal samples."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randint(low: int, high: int, *shape: int, dtype=np.int64, seed: int = 0) -> np.ndarray:
    """Deterministic integers in [low, high)."""
    return np.random.default_rng(seed).integers(low, high, shape).astype(dtype)


def i64(*values: int) -> np.ndarray:
    """1-D int64 array, the usual type of shape-like inputs."""
    return np.array(values, dtype=np.int64)


def torch_only(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    opset: int,
    num_outputs: int = 1,
) -> list[np.ndarray]:
    """qtool's outputs alone, for behaviour where onnxruntime departs from the spec."""
    model = make_model(op_type, inputs, attrs or {}, opset, num_outputs, ())
    return [t.cpu().numpy() for t in run_torch(model, [None if a is None else np.asarray(a) for a in inputs], opset)]
