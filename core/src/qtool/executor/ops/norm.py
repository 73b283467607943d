"""Normalizations: Batch-, Instance-, Layer-, Group- and LpNormalization, LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import normalize_axis, optional_input
from .registry import op_impl


def _channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-channel vector shaped to broadcast against NCHW... ``x``."""
    return t.reshape(1, -1, *[1] * (x.dim() - 2))


def _training(ctx, attrs) -> bool:
    """training_mode from opset 14; before, declaring the optional outputs meant training."""
    return bool(attrs.get("training_mode", 0)) if ctx.opset >= 14 else ctx.num_outputs > 1


@op_impl("BatchNormalization")
def batch_normalization(ctx, attrs, inputs):
    """Inference uses the given statistics; training the batch's (population variance).

    Training outputs: Y, running mean and variance (blended by ``momentum``) and,
    before opset 14, the batch mean and inverse standard deviation (as onnxruntime).
    """
    x, scale, bias, mean, var = inputs
    eps = attrs.get("epsilon", 1e-5)
    if not _training(ctx, attrs):
        return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)]
    dims = [0, *range(2, x.dim())]
    batch_mean = x.float().mean(dims)
    batch_var = x.float().var(dims, correction=0)
    inv_std = torch.rsqrt(batch_var + eps)
    y = (x - _channel_view(batch_mean, x)) * _channel_view(inv_std, x)
    y = (y * _channel_view(scale, x) + _channel_view(bias, x)).to(x.dtype)
    momentum = attrs.get("momentum", 0.9)
    running_mean = mean * momentum + batch_mean.to(mean.dtype) * (1 - momentum)
    running_var = var * momentum + batch_var.to(var.dtype) * (1 - momentum)
    saved = [batch_mean.to(mean.dtype), inv_std.to(var.dtype)]
    return [y, running_mean, running_var, *saved][: ctx.num_outputs]


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
    eps = attrs.get("epsilon", 1e-5)
    stashed = _stash(x, attrs)
    if ctx.num_outputs == 1:  # the fused kernel, when the statistics are not wanted
        y = F.layer_norm(stashed, x.shape[axis:], eps=eps).to(x.dtype) * scale
        return [y if bias is None else y + bias]
    mean = stashed.mean(dims, keepdim=True)
    centered = stashed - mean
    inv_std = torch.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)
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


@op_impl("LpNormalization")
def lp_normalization(ctx, attrs, inputs):
    """x / ||x||_p along ``axis``; all-zero vectors stay zero."""
    x = inputs[0]
    dim = normalize_axis(attrs.get("axis", -1), x.dim())
    norm = torch.linalg.vector_norm(x, attrs.get("p", 2), dim, keepdim=True)
    return [torch.where(norm > 0, x / norm, torch.zeros_like(x))]


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
