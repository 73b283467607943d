"""Baking: parameters stored on their grid, configs BAKED, simulation unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from passes_helpers import ASYM_INT8, graph_of, init, outputs, passes_until, random_samples, tensor
from qtool.passes import PassError, PassManager, PassResult
from qtool.passes.baking import Baking
from qtool.quant import QuantizationState

SAMPLES = random_samples((1, 2, 4, 4))


def _graph(shared_weight: bool = False):
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2" if not shared_weight else "w", "b"], ["y"], name="conv2")]
    inits = [init("w", rng.normal(size=(2, 2, 3, 3))), init("b", rng.normal(size=2)),
             init("w2", rng.normal(size=(2, 2, 1, 1)) if not shared_weight else rng.normal(size=(2, 2, 3, 3)))]
    if shared_weight:
        nodes[2].attribute.extend([helper.make_attribute("pads", [1, 1, 1, 1])])
    return graph_of(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", None)], inits)


def _codes(value, tqc) -> np.ndarray:
    scale = np.asarray(tqc.scale, dtype=np.float64)
    shape = (-1,) + (1,) * (value.ndim - 1) if scale.ndim else ()
    return value / scale.reshape(shape) + np.asarray(tqc.offset, dtype=np.float64).reshape(shape)


def test_baked_weights_and_bias_are_integer_codes_and_simulation_is_unchanged(make_config):
    graph = _graph()
    PassManager(passes_until(make_config(activation=ASYM_INT8), SAMPLES, "PassiveParameterQuantize")).run(graph)
    before = outputs(graph, SAMPLES)

    result = Baking()(graph)

    conv = graph.operations["conv"]
    w, b = conv.quant.inputs[1], conv.quant.inputs[2]
    assert (w.state, b.state) == (QuantizationState.BAKED, QuantizationState.PASSIVE_BAKED)
    assert sorted(result.details["baked"]) == ["b", "b_conv", "w", "w2"]  # b is shared: conv got a copy
    for var, tqc in ((conv.inputs[1], w), (conv.inputs[2], b)):
        codes = _codes(var.value.astype(np.float64), tqc)
        np.testing.assert_allclose(codes, np.round(codes), atol=2e-3)
    np.testing.assert_allclose(outputs(graph, SAMPLES), before, rtol=1e-5, atol=1e-5)
    assert not Baking()(graph).modified


def test_a_weight_read_by_two_ops_gets_a_private_copy_per_reader(make_config):
    graph = _graph(shared_weight=True)
    original = graph.variables["w"].value.copy()
    PassManager(passes_until(make_config(override=[{"op_name": "conv2", "weight": {"bits": 4}}]), SAMPLES)).run(graph)

    first, second = (graph.operations[n].inputs[1] for n in ("conv", "conv2"))
    assert first is not second
    q4 = graph.operations["conv2"].quant.inputs[1]
    codes = _codes(second.value.astype(np.float64), q4)
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert np.abs(codes).max() <= 8 and not np.array_equal(first.value, second.value)
    assert np.abs(first.value - original).max() <= float(graph.operations["conv"].quant.inputs[1].scale.max())


def test_postcondition_names_a_parameter_left_unbaked(make_config):
    graph = _graph()
    PassManager(passes_until(make_config(), SAMPLES, "PassiveParameterQuantize")).run(graph)

    class Forgetful(Baking):
        def call(self, graph):
            return PassResult(graph, False)

    with pytest.raises(PassError, match="parameters left unbaked: w at conv"):
        Forgetful()(graph)
