"""Plugins add ops through ``qtool_register_ops``."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
from onnx import TensorProto, helper
from qtool.executor import TorchExecutor, load_plugin_ops
from qtool.executor.ops import get_op, is_supported
from qtool.ir import from_model_proto
from qtool.plugins import plugin_manager


def twice(ctx, attrs, inputs):
    return [inputs[0] * attrs.get("factor", 2.0)]


def fake_relu(ctx, attrs, inputs):
    return [inputs[0]]


class TwicePlugin:
    @qtool.hookimpl
    def qtool_register_ops(self, register):
        register("Twice", twice, domain="com.example.exec")


class ClashingPlugin:
    @qtool.hookimpl
    def qtool_register_ops(self, register):
        register("Relu", fake_relu)


@pytest.fixture
def registered():
    manager, added = plugin_manager().manager, []

    def add(plugin):
        manager.register(plugin)
        added.append(plugin)
        load_plugin_ops(reload=True)

    yield add
    for plugin in added:
        manager.unregister(plugin)


def twice_graph():
    node = helper.make_node("Twice", ["x"], ["y"], "double", domain="com.example.exec", factor=3.0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example.exec", 1)]
    return from_model_proto(helper.make_model(graph, opset_imports=opsets))


def test_plugin_op_runs_in_the_executor(registered):
    registered(TwicePlugin())
    assert is_supported("Twice", "com.example.exec")
    np.testing.assert_array_equal(TorchExecutor(twice_graph()).forward([np.array([1, 2], np.float32)])[0], [3, 6])
    load_plugin_ops(reload=True)  # asking again re-registers the same function: no clash


def test_plugin_cannot_replace_a_builtin_op(registered, capsys):
    registered(ClashingPlugin())
    assert "op 'Relu' in domain 'ai.onnx' is already registered" in capsys.readouterr().err
    assert get_op("Relu") is not fake_relu
