"""validate(): errors name the activation TensorRT cannot range; weights warn only when configured away from default."""

import qtool
from qtool import QuantScheme, Severity
from qtool.config import resolve_config
from qtool.testing import quantize_by_hand, retarget


def _validate(graph):
    return qtool.get_platform("tensorrt").validate(graph, qtool.ExportOptions())


def test_default_int8_graph_is_clean(qtool_calibrated_graph):
    assert _validate(qtool_calibrated_graph) == []


def test_non_int8_symmetric_per_tensor_activations_are_errors(qtool_calibrated_graph):
    retarget(qtool_calibrated_graph, "input", QuantScheme.integer(8, symmetric=False))
    retarget(qtool_calibrated_graph, "relu_out", QuantScheme.integer(4))
    retarget(qtool_calibrated_graph, "output", QuantScheme.floating(4, 3))
    found = [(d.severity, d.code, d.op, d.tensor) for d in _validate(qtool_calibrated_graph)]
    assert found == [
        (Severity.ERROR, "trt.activation-scheme", "conv1", "input"),
        (Severity.ERROR, "trt.activation-scheme", "relu", "relu_out"),
        (Severity.ERROR, "trt.activation-scheme", "fc", "output"),
    ]
    assert _validate(qtool_calibrated_graph)[1].scheme == "int4 sym per-tensor [-8, 7]"
    assert "int4 sym per-tensor" in str(_validate(qtool_calibrated_graph)[1])


def test_per_channel_activation_is_an_error(qtool_small_model):
    graph = quantize_by_hand(qtool.load(qtool_small_model),
                             activation=QuantScheme.integer(8, per_channel=True, channel_axis=1))
    assert {d.code for d in _validate(graph)} == {"trt.activation-scheme"}


def test_disagreeing_readers_are_a_range_conflict(qtool_calibrated_graph):
    conv2_input = qtool_calibrated_graph.operations["conv2"].quant.inputs[0]
    conv2_input.set_params(conv2_input.scale * 2, conv2_input.offset)
    (d,) = _validate(qtool_calibrated_graph)
    assert (d.severity, d.code, d.tensor, d.op) == (Severity.ERROR, "trt.range-conflict", "relu_out", "conv2")
    assert "relu" in d.message and "conv2" in d.message


def test_weights_warn_only_when_not_the_default(qtool_small_model):
    graph = quantize_by_hand(qtool.load(qtool_small_model), weight=QuantScheme.integer(4, per_channel=True,
                                                                                       channel_axis=0))
    (d,) = _validate(graph)
    assert (d.severity, d.code, d.op, d.tensor) == (Severity.WARNING, "trt.weights-not-exported", "conv1",
                                                     "conv1.weight")
    assert "3 weight tensor(s)" in d.message and "int4" in d.message
    per_tensor = quantize_by_hand(qtool.load(qtool_small_model), weight=QuantScheme.integer(8))
    assert [d.code for d in _validate(per_tensor)] == ["trt.weights-not-exported"]


def test_per_channel_weights_on_another_axis_warn(qtool_calibrated_graph):
    """TensorRT quantizes a Conv's weight along its output channels (axis 0); axis 1 is not what the engine runs."""
    retarget(qtool_calibrated_graph, "conv2.weight", QuantScheme.integer(8, per_channel=True, channel_axis=1))
    (d,) = _validate(qtool_calibrated_graph)
    assert (d.severity, d.code, d.op, d.tensor) == (Severity.WARNING, "trt.weights-not-exported", "conv2",
                                                     "conv2.weight")
    assert d.scheme == "int8 sym per-channel(axis=1) [-128, 127]" and "1 weight tensor(s)" in d.message


def test_default_config_resolves_to_what_validate_accepts(qtool_small_model):
    config = resolve_config(qtool.get_platform("tensorrt").default_config())
    assert config.bias_mode == "float"
    graph = qtool.load(qtool_small_model)
    conv = graph.operations["conv1"]
    activation, weight = config.scheme_for(conv, "activation"), config.scheme_for(conv, "weight")
    assert activation.short() == "int8 sym per-tensor [-128, 127]"
    assert weight.short() == "int8 sym per-channel(axis=0) [-128, 127]"
    graph = quantize_by_hand(graph, activation=activation, weight=weight)
    assert _validate(graph) == []
