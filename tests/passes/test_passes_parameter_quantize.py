"""ParameterQuantize: weight scales from their values, per tensor, per channel and per block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from passes_helpers import graph_of, init, run, tensor
from qtool.passes.dispatch import Dispatch
from qtool.passes.parameter_quantize import ParameterQuantize, value_range
from qtool.quant import QuantizationState, QuantScheme, fake_quantize

RNG = np.random.default_rng(3)


def _quantize(graph, config):
    return run([Dispatch(config), ParameterQuantize()], graph)


def test_conv_weight_per_channel_symmetric(make_config):
    weight = RNG.normal(size=(5, 2, 3, 3)).astype(np.float32)
    weight[2] *= 10  # one channel much wider: per-channel keeps the others fine
    graph = graph_of([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [tensor("x", [1, 2, 5, 5])],
                     [tensor("y", None)], [init("w", weight)])

    runs = _quantize(graph, make_config())

    tqc = graph.operations["conv"].quant.inputs[1]
    assert tqc.state is QuantizationState.ACTIVATED and runs["ParameterQuantize"].details["quantized"] == ["w"]
    expected = np.abs(weight).reshape(5, -1).max(axis=1) / 127
    np.testing.assert_allclose(tqc.scale, expected, rtol=1e-6)
    np.testing.assert_array_equal(tqc.offset, 0)
    error = np.abs(fake_quantize(torch.from_numpy(weight), tqc.scheme, tqc.scale, tqc.offset).numpy() - weight)
    assert (error.reshape(5, -1).max(axis=1) <= expected / 2 + 1e-7).all()


def test_matmul_weight_per_block_with_a_short_last_block(make_config):
    weight = RNG.normal(size=(10, 6)).astype(np.float32)
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [tensor("x", [2, 10])],
                     [tensor("y", None)], [init("w", weight)])
    config = make_config(weight={"granularity": "per_block", "block_size": 4, "axis": 0, "bits": 4})

    _quantize(graph, config)

    tqc = graph.operations["mm"].quant.inputs[1]
    assert tqc.scale.shape == (3, 6)
    blocks = [weight[0:4], weight[4:8], weight[8:10]]
    # full-range symmetric blocks (ORT's MatMulNBits rule): the extreme lands on code -8, or on 7 with zero point -1
    expected = np.stack([np.abs(b).max(axis=0) for b in blocks]) / 8
    np.testing.assert_allclose(tqc.scale, expected, rtol=1e-6)
    positive = np.stack([b.max(axis=0) > -b.min(axis=0) for b in blocks])
    np.testing.assert_array_equal(tqc.offset, np.where(positive, -1, 0))
    quantized = fake_quantize(torch.from_numpy(weight), tqc.scheme, tqc.scale, tqc.offset).numpy()
    assert np.abs(quantized - weight).max() <= expected.max() / 2 + 1e-6


def test_constant_operand_of_add_is_quantized_per_tensor(make_config):
    constant = RNG.uniform(-1.0, 3.0, size=(1, 4)).astype(np.float32)
    graph = graph_of([helper.make_node("Add", ["x", "c"], ["y"], name="add")], [tensor("x", [2, 4])],
                     [tensor("y", None)], [init("c", constant)])

    _quantize(graph, make_config(weight={"symmetric": False}))

    tqc = graph.operations["add"].quant.inputs[1]
    assert not tqc.scheme.is_per_channel and tqc.state is QuantizationState.ACTIVATED
    lo, hi = min(constant.min(), 0.0), constant.max()
    np.testing.assert_allclose(tqc.scale, (hi - lo) / 255, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_value_range_per_channel_reduces_every_other_axis(axis):
    value = RNG.normal(size=(3, 4, 5))
    scheme = QuantScheme.integer(8, per_channel=True, channel_axis=axis)

    lo, hi = value_range(value, scheme)

    moved = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
    np.testing.assert_array_equal(lo, moved.min(axis=1))
    np.testing.assert_array_equal(hi, moved.max(axis=1))


def _conv_graph(weight):
    return graph_of([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [tensor("x", [1, 8, 5, 5])],
                    [tensor("y", None)], [init("w", weight)])


def _channel_errors(weight, tqc):
    error = (fake_quantize(torch.from_numpy(weight), tqc.scheme, tqc.scale, tqc.offset).numpy() - weight) ** 2
    return error.reshape(weight.shape[0], -1).sum(axis=1)


def test_mse_observer_clips_4_bit_weights_to_the_least_error_range(make_config):
    weight = RNG.standard_t(3, size=(6, 8, 3, 3)).astype(np.float32)  # heavy tails: min/max wastes levels
    plain, tuned = _conv_graph(weight), _conv_graph(weight)

    _quantize(plain, make_config(weight={"bits": 4}))
    _quantize(tuned, make_config(weight={"bits": 4, "observer": "mse:50"}))

    minmax, mse = plain.operations["conv"].quant.inputs[1], tuned.operations["conv"].quant.inputs[1]
    assert (mse.scale <= minmax.scale * (1 + 1e-6)).all() and (mse.scale < minmax.scale * 0.95).any()
    assert (_channel_errors(weight, mse) <= _channel_errors(weight, minmax) * (1 + 1e-6)).all()
    # the chosen scale is the best of the 50 fractions k/50 of the min/max range, checked by brute force
    rows = torch.from_numpy(weight.reshape(6, -1))
    fractions = np.arange(1, 51) / 50
    amax = np.abs(weight.reshape(6, -1)).max(axis=1)
    errors = [((torch.clamp(torch.round(rows / torch.from_numpy(s)[:, None]), -8, 7) * torch.from_numpy(s)[:, None]
                - rows) ** 2).sum(dim=1).numpy() for s in (amax[None, :] * fractions[:, None] / 7).astype(np.float32)]
    best = fractions[np.argmin(np.stack(errors), axis=0)]
    np.testing.assert_allclose(mse.scale, amax * best / 7, rtol=1e-5)


def test_mse_observer_leaves_per_block_weights_at_min_max(make_config):
    weight = RNG.standard_t(3, size=(8, 6)).astype(np.float32)
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [tensor("x", [2, 8])],
                     [tensor("y", None)], [init("w", weight)])

    _quantize(graph, make_config(weight={"granularity": "per_block", "block_size": 4, "axis": 0, "bits": 4,
                                         "observer": "mse"}))

    expected = np.stack([np.abs(weight[0:4]).max(axis=0), np.abs(weight[4:8]).max(axis=0)]) / 8
    np.testing.assert_allclose(graph.operations["mm"].quant.inputs[1].scale, expected, rtol=1e-6)
