"""Pooling: MaxPool, AveragePool, LpPool and their global forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._spatial import pad_spatial, resolve_pads, span, strides_and_dilations
from .registry import op_impl

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass
class _Window:
    """Pooling geometry; ``extra`` pads the end so that ceil_mode windows fit."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]
    extra: list[int]

    @property
    def rank(self) -> int:
        return len(self.kernel)


def _window(attrs, x: torch.Tensor) -> _Window:
    kernel = list(attrs["kernel_shape"])
    strides, dilations = strides_and_dilations(attrs, len(kernel))
    sizes = list(x.shape[2:])
    begins, ends = resolve_pads(attrs, sizes, kernel, strides, dilations)
    extra = [0] * len(kernel)
    if attrs.get("ceil_mode", 0):
        for i, (n, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations, strict=True)):
            padded = n + begins[i] + ends[i]
            out = -(-(padded - span(k, d)) // s) + 1
            if (out - 1) * s >= n + begins[i]:  # windows may not start in the end padding
                out -= 1
            extra[i] = max((out - 1) * s + span(k, d) - padded, 0)
    return _Window(kernel, strides, dilations, begins, ends, extra)


def _padded(x: torch.Tensor, w: _Window, value: float) -> torch.Tensor:
    return pad_spatial(x, w.begins, [end + extra for end, extra in zip(w.ends, w.extra, strict=True)], value)


def _window_mean(x: torch.Tensor, w: _Window) -> torch.Tensor:
    """Mean over every (unpadded) window of an already padded ``x``."""
    if all(d == 1 for d in w.dilations):
        return _AVG_POOL[w.rank](x, w.kernel, w.strides)
    planes = x.reshape(-1, 1, *x.shape[2:])
    weight = x.new_full((1, 1, *w.kernel), 1 / math.prod(w.kernel))
    y = _CONV[w.rank](planes, weight, None, w.strides, 0, w.dilations)
    return y.reshape(*x.shape[:2], *y.shape[2:])


def _window_counts(x: torch.Tensor, w: _Window, include_pad: bool) -> torch.Tensor:
    """How many elements of each window lie inside the input (or its pads)."""
    counts = torch.ones((), device=x.device)
    for i, n in enumerate(x.shape[2:]):
        out = (n + w.begins[i] + w.ends[i] + w.extra[i] - span(w.kernel[i], w.dilations[i])) // w.strides[i] + 1
        taps = torch.arange(out, device=x.device)[:, None] * w.strides[i] - w.begins[i]
        taps = taps + torch.arange(w.kernel[i], device=x.device) * w.dilations[i]
        low, high = (-w.begins[i], n + w.ends[i]) if include_pad else (0, n)
        axis_counts = ((taps >= low) & (taps < high)).sum(1)
        counts = counts[..., None] * axis_counts
    return counts


@op_impl("AveragePool")
def average_pool(ctx, attrs, inputs):
    x = inputs[0]
    w = _window(attrs, x)
    include_pad = bool(attrs.get("count_include_pad", 0))
    y = _window_mean(_padded(x, w, 0.0), w)
    if any(w.extra) or not include_pad and any(w.begins + w.ends):  # some windows are partial
        y = y * (math.prod(w.kernel) / _window_counts(x, w, include_pad)).to(y.dtype)
    return [y]


@op_impl("LpPool")
def lp_pool(ctx, attrs, inputs):
    x = inputs[0]
    p = attrs.get("p", 2)
    w = _window(attrs, x)
    sums = _window_mean(_padded(x.abs() ** p, w, 0.0), w) * math.prod(w.kernel)
    return [sums ** (1 / p)]


def _lowest(dtype: torch.dtype) -> float:
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


@op_impl("MaxPool")
def max_pool(ctx, attrs, inputs):
    """Second output: flat indices into X; storage_order=1 counts column-major (2D)."""
    x = inputs[0]
    w = _window(attrs, x)
    with_indices = ctx.num_outputs > 1
    padded = _padded(x, w, _lowest(x.dtype))
    # CUDA has no integer max pooling: 8-bit values are exact in float32
    pooled = padded.float() if x.is_cuda and not x.is_floating_point() else padded
    result = _MAX_POOL[w.rank](pooled, w.kernel, w.strides, 0, w.dilations, return_indices=with_indices)
    y, indices = result if with_indices else (result, None)
    y = y.to(x.dtype)
    if not with_indices:
        return [y]
    return [y, _flat_indices(indices, x, padded, w, attrs.get("storage_order", 0))]


def _flat_indices(indices, x, padded, w: _Window, storage_order: int) -> torch.Tensor:
    """Map torch's per-plane indices into ``padded`` to ONNX indices into ``x``."""
    sizes = list(x.shape[2:])
    coords = []
    for n in reversed(padded.shape[2:]):
        coords.append(indices % n)
        indices = indices // n
    coords = [c - b for c, b in zip(reversed(coords), w.begins, strict=True)]
    if storage_order:
        coords, sizes = coords[::-1], sizes[::-1]
    flat = torch.zeros_like(coords[0])
    for c, n in zip(coords, sizes, strict=True):
        flat = flat * n + c
    planes = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1], *[1] * w.rank)
    return flat + planes * math.prod(sizes)


def _spatial_dims(x: torch.Tensor) -> list[int]:
    return list(range(2, x.dim()))


@op_impl("GlobalAveragePool")
def global_average_pool(ctx, attrs, inputs):
    x = inputs[0]
    return [x.mean(_spatial_dims(x), keepdim=True)]


@op_impl("GlobalMaxPool")
def global_max_pool(ctx, attrs, inputs):
    x = inputs[0]
    return [x.amax(_spatial_dims(x), keepdim=True)]


@op_impl("GlobalLpPool")
def global_lp_pool(ctx, attrs, inputs):
    x = inputs[0]
    p = attrs.get("p", 2)
    return [(x.abs() ** p).sum(_spatial_dims(x), keepdim=True) ** (1 / p)]
