"""Index-driven reads and writes: Gather*, Scatter*, NonZero, OneHot."""

from __future__ import annotations

import math

import torch

from ._common import normalize_axis
from .registry import op_impl

# ONNX reduction attribute -> torch scatter_reduce mode.
_REDUCTIONS = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _wrap(indices: torch.Tensor, size) -> torch.Tensor:
    """Negative indices count from the end; ``size`` may be a tensor per last dim."""
    indices = indices.long()
    return torch.where(indices < 0, indices + size, indices)


@op_impl("Gather")
def gather(ctx, attrs, inputs):
    x, indices = inputs
    axis = normalize_axis(attrs.get("axis", 0), x.dim())
    picked = x.index_select(axis, _wrap(indices, x.shape[axis]).reshape(-1))
    return [picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))]


@op_impl("GatherElements")
def gather_elements(ctx, attrs, inputs):
    x, indices = inputs
    axis = normalize_axis(attrs.get("axis", 0), x.dim())
    return [torch.gather(x, axis, _wrap(indices, x.shape[axis]))]


def _linear_index(indices: torch.Tensor, dims) -> torch.Tensor:
    """Row-major offsets of index tuples (last axis of ``indices``) into ``dims``."""
    dims = torch.tensor(list(dims), dtype=torch.int64, device=indices.device)
    strides = torch.ones_like(dims)
    if len(dims) > 1:
        strides[:-1] = torch.flip(torch.cumprod(torch.flip(dims[1:], [0]), 0), [0])
    return (_wrap(indices, dims) * strides).sum(-1)


@op_impl("GatherND")
def gather_nd(ctx, attrs, inputs):
    """Index tuples address the dims after ``batch_dims`` shared leading dims."""
    data, indices = inputs
    batch_dims = attrs.get("batch_dims", 0)
    depth = indices.shape[-1]
    batch_shape, rest = data.shape[:batch_dims], data.shape[batch_dims:]
    batch = math.prod(batch_shape)
    lookup = data.reshape(batch, math.prod(rest[:depth]), *rest[depth:])
    query_shape = indices.shape[batch_dims:-1]
    offsets = _linear_index(indices, rest[:depth]).reshape(batch, math.prod(query_shape))
    picked = lookup[torch.arange(batch, device=data.device)[:, None], offsets]
    return [picked.reshape((*batch_shape, *query_shape, *rest[depth:]))]


def _scatter_rows(target: torch.Tensor, rows: torch.Tensor, updates: torch.Tensor, reduction: str) -> torch.Tensor:
    """Write (or reduce) ``updates`` into rows ``rows`` of ``target``, in place."""
    if reduction == "none":
        target[rows] = updates
        return target
    index = rows.reshape(-1, *[1] * (updates.dim() - 1)).expand_as(updates)
    return target.scatter_reduce_(0, index, updates, _REDUCTIONS[reduction], include_self=True)


@op_impl("ScatterND")
def scatter_nd(ctx, attrs, inputs):
    data, indices, updates = inputs
    depth = indices.shape[-1]
    rows = _linear_index(indices, data.shape[:depth]).reshape(-1)
    target = data.reshape(math.prod(data.shape[:depth]), *data.shape[depth:]).clone()
    updates = updates.reshape(rows.numel(), *data.shape[depth:])
    return [_scatter_rows(target, rows, updates, attrs.get("reduction", "none")).reshape(data.shape)]


@op_impl("ScatterElements", "Scatter")  # Scatter: the deprecated name (opsets 9-10)
def scatter_elements(ctx, attrs, inputs):
    data, indices, updates = inputs
    axis = normalize_axis(attrs.get("axis", 0), data.dim())
    indices = _wrap(indices, data.shape[axis])
    reduction = attrs.get("reduction", "none")
    if reduction == "none":
        return [data.scatter(axis, indices, updates)]
    return [data.scatter_reduce(axis, indices, updates, _REDUCTIONS[reduction], include_self=True)]


@op_impl("NonZero")
def non_zero(ctx, attrs, inputs):
    return [torch.nonzero(inputs[0]).t()]


@op_impl("OneHot")
def one_hot(ctx, attrs, inputs):
    """``values`` = [off, on]; out-of-range indices give all-off rows."""
    indices, depth, values = inputs
    depth = int(depth.item())
    rank = indices.dim() + 1
    axis = normalize_axis(attrs.get("axis", -1), rank)
    classes = torch.arange(depth, device=indices.device).reshape(depth, *[1] * (rank - 1 - axis))
    hot = _wrap(indices, depth).unsqueeze(axis) == classes
    return [torch.where(hot, values[1], values[0])]
