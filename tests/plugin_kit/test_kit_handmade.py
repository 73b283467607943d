"""quantize_by_hand: deterministic calibrated (or only dispatched) graphs for plugin tests."""

import numpy as np
import pytest
import qtool
import torch
from qtool.quant import fake_quantize
from qtool.testing import quantize_by_hand, retarget, small_model


def test_quantize_by_hand_int32_bias_follows_its_inputs(tmp_path):
    graph = quantize_by_hand(qtool.load(small_model(tmp_path / "m.onnx")), bias="int32")
    fc = graph.operations["fc"].quant
    assert fc.inputs[1].scheme.channel_axis == 0  # Gemm with transB=1: output channels on axis 0
    np.testing.assert_allclose(fc.inputs[2].scale, fc.inputs[0].scale * fc.inputs[1].scale, rtol=1e-6)
    retarget(graph, "flat_out", qtool.QuantScheme.integer(8, signed=False, symmetric=False))
    np.testing.assert_allclose(fc.inputs[2].scale, fc.inputs[0].scale * fc.inputs[1].scale, rtol=1e-6)
    assert fc.inputs[0].offset > 0
    with pytest.raises(qtool.UnknownNameError, match="'nothing' has no quantization config"):
        retarget(graph, "nothing", qtool.QuantScheme.integer(8))


def test_unsettled_graph_is_dispatched_only(qtool_small_model):
    graph = quantize_by_hand(qtool.load(qtool_small_model), bias="int32", settled=False)
    entries = list(qtool.quantized_tensors(graph, settled=False))
    assert list(qtool.quantized_tensors(graph)) == [] and not any(e.settled for e in entries)
    states = {e.config.state for e in entries}
    assert states == {qtool.QuantizationState.INITIAL, qtool.QuantizationState.PASSIVE_INIT}
    relu_reader = graph.operations["conv2"].quant.inputs[0]
    assert relu_reader.dominator is graph.operations["relu"].quant.outputs[0]


def test_per_block_weights_get_one_scale_per_block(qtool_small_model):
    scheme = qtool.QuantScheme.integer(4, per_channel=True, channel_axis=1, block_size=2)
    graph = quantize_by_hand(qtool.load(qtool_small_model), weight=scheme)
    tqc = graph.operations["conv1"].quant.inputs[1]
    weight = graph.variables["conv1.weight"].value  # (4, 3, 3, 3): 3 input channels -> blocks of 2 and 1
    assert tqc.scale.shape == (4, 2, 3, 3)
    # int4 symmetric blocks use every code, as ORT's MatMulNBits quantizer: amax / 8 (zero point -1 or 0 by its sign)
    np.testing.assert_allclose(tqc.scale[:, 1], np.abs(weight[:, 2]) / 8, rtol=1e-6)
    error = (fake_quantize(torch.tensor(weight), scheme, tqc.scale, tqc.offset).numpy() - weight)
    assert np.abs(error).max() <= tqc.scale.max() / 2 + 1e-7
