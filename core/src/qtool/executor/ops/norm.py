"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization, LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import normalize_axis, optional_input
from .registry import op_impl


def _channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-channel vector shaped to broadcast against NCHW... ``x``."""
    return t.reshape(1, -1, *[1] * (x.dim() - 2))


@op_impl("BatchNormalization")
def batch_normalization(ctx, attrs, inputs):
    """Inference uses the given statistics; training_mode (opset 14+) the batch's."""
    x, scale, bias, mean, var = inputs
    eps = attrs.get("epsilon", 1e-5)
    if not (ctx.opset >= 14 and attrs.get("training_mode", 0)):
        return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)]
    dims = [0, *range(2, x.dim())]
    batch_mean = x.float().mean(dims)
    batch_var = x.float().var(dims, correction=0)
    y = (x - _channel_view(batch_mean, x)) * torch.rsqrt(_channel_view(batch_var, x) + eps)
    y = (y * _channel_view(scale, x) + _channel_view(bias, x)).to(x.dtype)
    momentum = attrs.get("momentum", 0.9)
    running_mean = mean * momentum + batch_mean.to(mean.dtype) * (1 - momentum)
    running_var = var * momentum + batch_var.to(var.dtype) * (1 - momentum)
    return [y, running_mean, running_var][: ctx.num_outputs]


@op_impl("InstanceNormalization")
def instance_normalization(ctx, attrs, inputs):
    x, scale, bias = inputs
    return [F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))]


def _stash(x: torch.Tensor, attrs) -> torch.Tensor:
    """Input in the precision ``stash_type`` asks the statistics to use (float32 by default)."""
    return x.float() if attrs.get("stash_type", 1) == 1 else x


@op_impl("LayerNormalization")
def layer_normalization(ctx, attrs, inputs):
    """Outputs Y and, when declared, Mean and InvStdDev shaped [d0..d(axis-1), 1, ...]."""
    x, scale, bias = inputs[0], inputs[1], optional_input(inputs, 2)
    axis = normalize_axis(attrs.get("axis", -1), x.dim())
    dims = list(range(axis, x.dim()))
    stashed = _stash(x, attrs)
    mean = stashed.mean(dims, keepdim=True)
    centered = stashed - mean
    inv_std = torch.rsqrt((centered * centered).mean(dims, keepdim=True) + attrs.get("epsilon", 1e-5))
    y = (centered * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return [y, mean, inv_std][: ctx.num_outputs]


@op_impl("GroupNormalization")
def group_normalization(ctx, attrs, inputs):
    """Scale and bias are per group before opset 21 and per channel since."""
    x, scale, bias = inputs
    groups = attrs["num_groups"]
    if ctx.opset < 21:
        per_group = x.shape[1] // groups
        scale, bias = scale.repeat_interleave(per_group), bias.repeat_interleave(per_group)
    normalized = F.group_norm(_stash(x, attrs), groups, eps=attrs.get("epsilon", 1e-5)).to(x.dtype)
    return [normalized * _channel_view(scale, x) + _channel_view(bias, x)]


@op_impl("LRN")
def lrn(ctx, attrs, inputs):
    """Channel window [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped to the input."""
    x = inputs[0]
    size = attrs["size"]
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    channels = x.shape[1]
    before = (size - 1) // 2
    squares = F.pad(x * x, [0, 0] * (x.dim() - 2) + [before, size - 1 - before])
    square_sum = sum(squares.narrow(1, i, channels) for i in range(size))
    return [x / (bias + alpha / size * square_sum) ** beta]
