"""Normalization ops against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, randn, torch_only


def _batch_norm_inputs(channels, *spatial):
    return [
        randn(2, channels, *spatial),
        randn(channels, seed=1),
        randn(channels, seed=2),
        randn(channels, seed=3),
        np.abs(randn(channels, seed=4)) + 0.5,
    ]


@pytest.mark.parametrize("spatial", [(), (5,), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("opset", [9, 15])
def test_batch_norm_inference(spatial, opset):
    check_op("BatchNormalization", _batch_norm_inputs(3, *spatial), {"epsilon": 1e-3}, opset=opset)


def test_batch_norm_opset_7():
    check_op("BatchNormalization", _batch_norm_inputs(3, 4, 4), opset=7)


@pytest.mark.parametrize("opset", [7, 9])
def test_batch_norm_legacy_training_outputs(opset):
    """Before opset 14, declaring the optional outputs asks for training statistics."""
    check_op("BatchNormalization", _batch_norm_inputs(3, 4, 5), {"momentum": 0.7}, opset=opset, num_outputs=5)


def test_batch_norm_training_mode():
    """Batch statistics normalize; running statistics blend in with ``momentum``."""
    attrs = {"training_mode": 1, "momentum": 0.8}
    check_op("BatchNormalization", _batch_norm_inputs(3, 4, 5), attrs, opset=15, num_outputs=3)


def test_instance_norm():
    check_op(
        "InstanceNormalization", [randn(2, 3, 4, 5), randn(3, seed=1), randn(3, seed=2)], {"epsilon": 1e-3}, opset=6
    )


@pytest.mark.parametrize("axis", [-1, 1, 0, -2])
@pytest.mark.parametrize("num_outputs", [1, 3])
def test_layer_norm(axis, num_outputs):
    x = randn(2, 3, 4)
    normalized = x.shape[axis:]
    inputs = [x, randn(*normalized, seed=1), randn(*normalized, seed=2)]
    check_op("LayerNormalization", inputs, {"axis": axis}, opset=17, num_outputs=num_outputs)


def test_layer_norm_broadcast_scale_without_bias():
    check_op("LayerNormalization", [randn(2, 3, 4), randn(1, 4, seed=1)], {"epsilon": 1e-3}, opset=17)


def test_layer_norm_float16():
    x, scale = randn(2, 8, dtype=np.float16), randn(8, dtype=np.float16, seed=1)
    check_op("LayerNormalization", [x, scale], opset=17, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("opset, groups", [(18, 2), (18, 6), (21, 1), (21, 3)])
def test_group_norm(opset, groups):
    """Scale and bias are per group in opset 18 and per channel from 21."""
    params = groups if opset < 21 else 6
    inputs = [randn(2, 6, 3, 4), randn(params, seed=1), randn(params, seed=2)]
    check_op("GroupNormalization", inputs, {"num_groups": groups, "epsilon": 1e-4}, opset=opset)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization(axis, p):
    x = randn(3, 4)
    x[1] = 0  # a zero vector along the last axis stays zero
    check_op("LpNormalization", [x], {"axis": axis, "p": p}, opset=1)


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("opset", [1, 13])
def test_lrn(size, opset):
    attrs = {"size": size, "alpha": 0.02, "beta": 0.6, "bias": 1.5}
    check_op("LRN", [randn(2, 6, 3, 4) * 3], attrs, opset=opset)


def _lrn_by_definition(x, size, alpha, beta, bias):
    """The spec's formula, channel by channel."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        low, high = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + size // 2)
        square_sum = (x[:, low : high + 1] ** 2).sum(1)
        y[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    return y


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (2, 5, 7)])
def test_lrn_even_size_any_rank(size, shape):
    """onnxruntime only runs odd sizes on 4D inputs; compare with the spec's formula."""
    x = randn(*shape) * 3
    (y,) = torch_only("LRN", [x], {"size": size, "alpha": 0.02, "beta": 0.6, "bias": 1.5}, opset=13)
    np.testing.assert_allclose(y, _lrn_by_definition(x, size, 0.02, 0.6, 1.5), rtol=1e-5, atol=1e-6)
