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
    expected = np.stack([np.abs(b).max(axis=0) for b in blocks]) / 7
    np.testing.assert_allclose(tqc.scale, expected, rtol=1e-6)
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
