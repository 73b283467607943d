"""PassiveParameterQuantize: int32 bias from s_in * s_w, saturation reports, Clip/Pad constants on the grid."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from passes_helpers import ASYM_INT8, graph_of, init, passes_until, random_samples, run, tensor
from qtool.passes import PassWarning
from qtool.quant import QuantizationState

RNG = np.random.default_rng(4)


def _conv_graph(bias: np.ndarray, tail=None, tail_inits=()):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if tail else "y"], name="conv", pads=[1, 1, 1, 1])]
    if tail:
        nodes.append(tail)
    return graph_of(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", None)],
                    [init("w", RNG.normal(size=(3, 2, 3, 3))), init("b", bias), *tail_inits])


def _run(graph, config, last="PassiveParameterQuantize"):
    return run(passes_until(config, random_samples((1, 2, 4, 4)), last), graph)


def test_int32_bias_scale_is_input_scale_times_weight_scale_per_channel(make_config):
    graph = _conv_graph(RNG.normal(size=3))

    runs = _run(graph, make_config(activation=ASYM_INT8))

    x, w, b = graph.operations["conv"].quant.inputs
    assert b.state is QuantizationState.PASSIVE and runs["PassiveParameterQuantize"].details["biases"] == ["b"]
    np.testing.assert_allclose(b.scale, x.scale * w.scale, rtol=1e-6)
    assert b.scale.shape == (3,)
    np.testing.assert_array_equal(b.offset, np.zeros(3))
    x.set_params(x.scale * 2, x.offset)  # the rule follows its sources
    np.testing.assert_allclose(b.scale, x.scale * w.scale, rtol=1e-6)


def test_per_tensor_weights_give_a_per_tensor_bias(make_config):
    graph = _conv_graph(RNG.normal(size=3))

    _run(graph, make_config(weight={"granularity": "per_tensor"}))

    x, w, b = graph.operations["conv"].quant.inputs
    assert b.scale.shape == () and np.isclose(b.scale, x.scale * w.scale)


def test_saturating_bias_is_reported_and_weight_scales_are_left_alone(make_config):
    graph = _conv_graph(np.array([1e9, 0.5, -2e9]))

    with pytest.warns(PassWarning, match="op 'conv'.*'b'.*2 channel") as caught:
        runs = _run(graph, make_config())
    w, b = graph.operations["conv"].quant.inputs[1:]

    saturated = runs["PassiveParameterQuantize"].details["saturated"]
    assert saturated == [{"op": "conv", "tensor": "b", "channels": 2,
                          "largest_code": pytest.approx(2e9 / float(b.scale[2]))}]
    # the output's calibration warns too (a 1e9 bias sets its range); the saturation is reported on its own
    assert [w.message.op for w in caught if w.message.code == "bias-saturation"] == ["conv"]
    weight = graph.variables["w"].value
    np.testing.assert_allclose(w.scale, np.abs(weight).reshape(3, -1).max(axis=1) / 127, rtol=1e-6)


@pytest.mark.parametrize("config, reason", [
    ({"weight": {"granularity": "per_block", "block_size": 2}}, "the weight is quantized per block"),
    ({"activation": {"granularity": "per_channel"}}, "the input is quantized per channel"),
    ({"weight": {"granularity": "per_channel", "axis": 1}}, "not on its output axis 0"),
])
def test_a_bias_no_int32_grid_can_follow_is_float_from_dispatch_on(make_config, config, reason):
    """Dispatch says so, not only the pass after calibration: explain showed an int32 bias the run wrote float,
    and a text table read into a planned graph counted it missing."""
    graph = _conv_graph(RNG.normal(size=3))
    _run(graph, make_config(**config), last="Dispatch")
    b = graph.operations["conv"].quant.inputs[2]
    assert b.state is QuantizationState.FP32 and reason in b.notes["reason"]

    graph = _conv_graph(RNG.normal(size=3))
    runs = _run(graph, make_config(**config))
    b = graph.operations["conv"].quant.inputs[2]
    assert b.state is QuantizationState.FP32 and runs["PassiveParameterQuantize"].details["biases"] == []


def _on_grid(value: float, tqc) -> bool:
    code = value / float(tqc.scale) + float(tqc.offset)
    return abs(code - round(code)) < 1e-4


def test_clip_bounds_are_rounded_onto_the_fused_output_grid(make_config):
    clip = helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")
    graph = _conv_graph(RNG.normal(size=3), clip, [init("lo", -0.3), init("hi", 0.7)])

    runs = _run(graph, make_config(activation=ASYM_INT8))

    grid = graph.operations["clip"].quant.outputs[0]
    lo, hi = (float(graph.operations["clip"].inputs[i].value) for i in (1, 2))
    assert sorted(runs["PassiveParameterQuantize"].details["rounded"]) == ["hi", "lo"]
    assert _on_grid(lo, grid) and _on_grid(hi, grid)
    assert abs(lo + 0.3) <= float(grid.scale) / 2 and abs(hi - 0.7) <= float(grid.scale) / 2


def test_pad_constant_is_rounded_onto_its_input_grid_in_a_private_copy(make_config):
    pads = helper.make_tensor("pads", 7, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    graph = _conv_graph(RNG.normal(size=3), helper.make_node("Pad", ["c", "pads", "value"], ["y"], name="pad"),
                        [pads, init("value", 0.123)])
    other = graph.add_variable("z")
    graph.add_operation("Pad", [graph.variables["x"], graph.variables["pads"], graph.variables["value"]], [other],
                        name="float_pad")
    graph.outputs.append(other)
    config = make_config(activation=ASYM_INT8, dispatch={"quantize_op_types": ["Conv", "Pad"],
                                                         "exclude": ["float_pad"]})

    _run(graph, config)

    grid = graph.operations["pad"].quant.inputs[0]
    value = float(graph.operations["pad"].inputs[2].value)
    assert _on_grid(value, grid) and value != np.float32(0.123) and abs(value - 0.123) <= float(grid.scale) / 2
    assert float(graph.operations["float_pad"].inputs[2].value) == np.float32(0.123)
