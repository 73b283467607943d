"""ParameterQuantize: weight scales from their values, per tensor, per channel and per block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from passes_helpers import graph_of, init, run, tensor
from qtool.passes.base import PassError
from qtool.passes.dispatch import Dispatch
from qtool.passes.parameter_quantize import ParameterQuantize, value_range
from qtool.quant import QuantizationState, QuantScheme, compute_scale_offset, fake_quantize

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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_weight_is_refused_naming_op_tensor_and_index(make_config, bad):
    """A NaN or inf in a weight (a corrupt embedding row) was rounded into an ordinary number the float model never
    had (a weight-only block with NaN got scale 1, zero point 0), and the run went on as if quantized."""
    weight = RNG.normal(size=(64, 8)).astype(np.float32)
    weight[3, 5] = bad
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [tensor("x", [2, 64])],
                     [tensor("y", None)], [init("w", weight)])
    config = make_config(weight_only={"enabled": True, "bits": 4, "block_size": 32})

    message = rf"op 'mm', parameter 'w': 1 non-finite value\(s\) \({bad} at index \[3, 5\]\)"
    with pytest.raises(PassError, match=message):
        _quantize(graph, config)


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


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_observer_clips_each_block_to_its_least_error_range(make_config, symmetric):
    """Per block (a short last block too) the best of the fractions k/50 of the block's min/max range, by brute force
    with the scheme's own scales. Per-block weights kept min/max, with no word (found by a user-style probe)."""
    weight = RNG.standard_t(3, size=(10, 6)).astype(np.float32)
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [tensor("x", [2, 10])],
                     [tensor("y", None)], [init("w", weight)])
    table = {"granularity": "per_block", "block_size": 4, "axis": 0, "bits": 4, "symmetric": symmetric,
             "signed": symmetric}

    _quantize(graph, make_config(weight={**table, "observer": "mse:50"}))

    tqc = graph.operations["mm"].quant.inputs[1]
    scheme = tqc.scheme
    assert tqc.scale.shape == (3, 6)
    for b, rows in enumerate((slice(0, 4), slice(4, 8), slice(8, 10))):
        block = weight[rows]
        for c in range(6):
            values, lo, hi = block[:, c], block[:, c].min(), block[:, c].max()
            errors = []
            for k in range(50, 0, -1):  # widest first, as ties go to the wider range
                s, z = compute_scale_offset(scheme, lo * k / 50, hi * k / 50)
                q = np.clip(np.round(values / np.float32(s)) + z, scheme.quant_min, scheme.quant_max)
                errors.append((((q - z) * np.float32(s) - values) ** 2).sum())
            best = 50 - int(np.argmin(errors))
            expected = compute_scale_offset(scheme, lo * best / 50, hi * best / 50)
            np.testing.assert_allclose(tqc.scale[b, c], expected[0], rtol=1e-6)
            assert tqc.offset[b, c] == expected[1]
    quantized = fake_quantize(torch.from_numpy(weight), scheme, tqc.scale, tqc.offset).numpy()
    plain = _min_max_blocks(weight, make_config(weight=table))
    assert ((quantized - weight) ** 2).sum() < ((plain - weight) ** 2).sum()


def _min_max_blocks(weight, config):
    """``weight`` fake-quantized with the min/max ranges of ``config``'s per-block scheme."""
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [tensor("x", [2, 10])],
                     [tensor("y", None)], [init("w", weight)])
    _quantize(graph, config)
    tqc = graph.operations["mm"].quant.inputs[1]
    return fake_quantize(torch.from_numpy(weight), tqc.scheme, tqc.scale, tqc.offset).numpy()
