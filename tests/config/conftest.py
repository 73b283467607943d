"""Shared fixtures of the configuration tests: a small model with Conv, Relu, Gemm and MatMul."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import qtool
import yaml
from onnx import TensorProto, helper, numpy_helper


def _small_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["g"], name="fc", transB=1),
        helper.make_node("MatMul", ["g", "head.w"], ["y"], name="head.matmul"),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [init("conv.w", 8, 3, 3, 3), init("conv.b", 8), init("fc.w", 6, 128), init("fc.b", 6), init("head.w", 6, 5)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.onnx"
    onnx.save(_small_model(), path)
    return path


@pytest.fixture
def small_graph(small_model_path):
    return qtool.load(small_model_path)


@pytest.fixture
def write_config(tmp_path):
    """write_config(text_or_dict, suffix) -> path of a real config file in tmp_path."""

    def write(content, suffix: str = ".toml", name: str = "qconfig"):
        path = tmp_path / f"{name}{suffix}"
        if isinstance(content, str):
            text = textwrap.dedent(content)
        elif suffix == ".json":
            text = json.dumps(content)
        else:
            text = yaml.safe_dump(content)
        path.write_text(text, encoding="utf-8")
        return path

    return write
