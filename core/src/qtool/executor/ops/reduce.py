"""Reductions (ReduceX), ArgMax/ArgMin, TopK and CumSum."""

from __future__ import annotations

import math

import torch

from ._common import attr_or_input, normalize_axes, normalize_axis
from .registry import op_impl, register_op


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keepdim, dtype=x.dtype)
    return x


def _sum(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(x, dims, keepdim=keepdim, dtype=x.dtype)


def _mean(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    """Integer means truncate toward zero, as onnxruntime's do."""
    if x.dtype.is_floating_point:
        return torch.mean(x, dims, keepdim=keepdim)
    count = math.prod(x.shape[d] for d in dims)
    return torch.div(_sum(x, dims, keepdim), count, rounding_mode="trunc")


def _extreme(fn, x: torch.Tensor, dims: list[int], keepdim: bool, lowest: bool) -> torch.Tensor:
    """Max or min; over an empty set, the type's lowest (max) or highest (min) value, as ONNX defines."""
    if all(x.shape[d] for d in dims):
        return fn(x, dims, keepdim=keepdim)
    shape = [1 if d in dims else n for d, n in enumerate(x.shape) if keepdim or d not in dims]
    if x.dtype == torch.bool:
        fill = not lowest
    else:
        info = torch.finfo(x.dtype) if x.dtype.is_floating_point else torch.iinfo(x.dtype)
        fill = (-math.inf if lowest else math.inf) if x.dtype.is_floating_point else (info.min if lowest else info.max)
    return torch.full(shape, fill, dtype=x.dtype, device=x.device)


# reducer(x, dims, keepdim), and the opset from which "axes" is an input.
_REDUCERS = {
    "ReduceSum": (_sum, 13),
    "ReduceMean": (_mean, 18),
    "ReduceMax": (lambda x, d, k: _extreme(torch.amax, x, d, k, lowest=True), 18),
    "ReduceMin": (lambda x, d, k: _extreme(torch.amin, x, d, k, lowest=False), 18),
    "ReduceProd": (_prod, 18),
    "ReduceL1": (lambda x, d, k: _sum(torch.abs(x), d, k), 18),
    "ReduceL2": (lambda x, d, k: torch.sqrt(_sum(x * x, d, k)), 18),
    "ReduceSumSquare": (lambda x, d, k: _sum(x * x, d, k), 18),
    "ReduceLogSum": (lambda x, d, k: torch.log(_sum(x, d, k)), 18),
    "ReduceLogSumExp": (lambda x, d, k: torch.logsumexp(x, d, keepdim=k), 18),
}


def _reduction(reducer, axes_input_since: int):
    def op(ctx, attrs, inputs):
        x = inputs[0]
        axes = attr_or_input(ctx, attrs, inputs, "axes", 1, axes_input_since)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        return [reducer(x, normalize_axes(axes, x.dim()), bool(attrs.get("keepdims", 1)))]

    return op


for _name, (_reducer, _since) in _REDUCERS.items():
    register_op(_name, _reduction(_reducer, _since))


def _arg_reduction(fn):
    def op(ctx, attrs, inputs):
        x = inputs[0]
        dim = normalize_axis(attrs.get("axis", 0), x.dim())
        keepdim = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            return [x.shape[dim] - 1 - fn(x.flip(dim), dim, keepdim=keepdim)]
        return [fn(x, dim, keepdim=keepdim)]

    return op


register_op("ArgMax", _arg_reduction(torch.argmax))
register_op("ArgMin", _arg_reduction(torch.argmin))


@op_impl("TopK")
def top_k(ctx, attrs, inputs):
    """Stable sort keeps the lower index first among equal values, as ONNX asks."""
    x = inputs[0]
    k = attrs["k"] if ctx.opset < 10 else int(inputs[1])
    dim = normalize_axis(attrs.get("axis", -1), x.dim())
    values, indices = torch.sort(x, dim=dim, descending=bool(attrs.get("largest", 1)), stable=True)
    return [values.narrow(dim, 0, k), indices.narrow(dim, 0, k)]


@op_impl("CumSum")
def cum_sum(ctx, attrs, inputs):
    x, axis = inputs
    dim = normalize_axis(int(axis), x.dim())
    reverse = attrs.get("reverse", 0)
    if reverse:
        x = x.flip(dim)
    out = torch.cumsum(x, dim, dtype=x.dtype)
    n = x.shape[dim]
    if attrs.get("exclusive", 0) and n:
        shifted = torch.zeros_like(out)
        shifted.narrow(dim, 1, n - 1).copy_(out.narrow(dim, 0, n - 1))
        out = shifted
    return [out.flip(dim) if reverse else out]
