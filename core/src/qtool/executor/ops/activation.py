"""Activation functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import optional_input, unary
from .registry import op_impl


@unary("Relu")
def relu(x, attrs):
    return torch.relu(x)


@unary("LeakyRelu")
def leaky_relu(x, attrs):
    return F.leaky_relu(x, attrs.get("alpha", 0.01))


@op_impl("PRelu")
def prelu(ctx, attrs, inputs):
    """Slope broadcasts unidirectionally onto X."""
    x, slope = inputs
    return [torch.where(x < 0, x * slope, x)]


@op_impl("Clip")
def clip(ctx, attrs, inputs):
    """Bounds are attributes before opset 11 and optional inputs since."""
    x = inputs[0]
    if ctx.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low, high = optional_input(inputs, 1), optional_input(inputs, 2)
    if low is None and high is None:
        return [x]
    return [torch.clamp(x, _bound(low), _bound(high))]


def _bound(bound):
    """A one-element CPU tensor as a Python number: torch's scalar clamp is several times faster on the CPU
    than its tensor form (on CUDA, ``item()`` would wait for the device, so tensors stay)."""
    if isinstance(bound, torch.Tensor) and bound.device.type == "cpu" and bound.numel() == 1:
        return bound.item()
    return bound


@unary("Sigmoid")
def sigmoid(x, attrs):
    return torch.sigmoid(x)


def _hard_sigmoid(x, alpha: float, beta: float):
    return torch.clamp(x * alpha + beta, 0, 1)


@unary("HardSigmoid")
def hard_sigmoid(x, attrs):
    return _hard_sigmoid(x, attrs.get("alpha", 0.2), attrs.get("beta", 0.5))


@unary("HardSwish")
def hard_swish(x, attrs):
    return x * _hard_sigmoid(x, 1 / 6, 0.5)


@unary("Softplus")
def softplus(x, attrs):
    return F.softplus(x)


@unary("Softsign")
def softsign(x, attrs):
    return F.softsign(x)


@unary("Elu")
def elu(x, attrs):
    return F.elu(x, attrs.get("alpha", 1.0))


@unary("Selu")
def selu(x, attrs):
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@unary("Celu")
def celu(x, attrs):
    return F.celu(x, attrs.get("alpha", 1.0))


@unary("Gelu")
def gelu(x, attrs):
    return F.gelu(x, approximate=attrs.get("approximate", "none"))


@unary("Mish")
def mish(x, attrs):
    return F.mish(x)


@unary("ThresholdedRelu")
def thresholded_relu(x, attrs):
    return torch.where(x > attrs.get("alpha", 1.0), x, torch.zeros_like(x))


@unary("Shrink")
def shrink(x, attrs):
    bias, lambd = attrs.get("bias", 0.0), attrs.get("lambd", 0.5)
    zero = torch.zeros_like(x)
    out = torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))
    return out.to(x.dtype)
