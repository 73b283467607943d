"""Resize (opsets 10-19) and Upsample: nearest, N-linear and N-cubic interpolation.

Each resized axis is interpolated separately: output coordinates map to input
coordinates (coordinate_transformation_mode), which select input taps and weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ._common import attr_or_input, normalize_axes, optional_input, to_list
from .registry import op_impl


@dataclass
class _Axis:
    """Resize request for one axis."""

    axis: int
    size: int  # output length
    scale: float
    roi: tuple[float, float] = (0.0, 1.0)


def _source_coords(mode: str, axis: _Axis, length: int, device) -> torch.Tensor:
    """Input coordinate (float32) of every output position along ``axis``."""
    x = torch.arange(axis.size, dtype=torch.float32, device=device)
    scale, out = axis.scale, axis.size
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "tf_half_pixel_for_nn":  # TensorFlow's nearest resize with half-pixel centers (tf2onnx writes it)
        return (x + 0.5) / scale
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        return x * (length - 1) / (out - 1) if out > 1 else torch.zeros_like(x)
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * length)
        offset = length / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        start, end = axis.roi
        if out == 1:
            return torch.full_like(x, 0.5 * (start + end) * (length - 1))
        return start * (length - 1) + x * (end - start) * (length - 1) / (out - 1)
    raise NotImplementedError(f"coordinate_transformation_mode {mode!r}")


def _nearest_index(coords: torch.Tensor, nearest_mode: str, length: int) -> torch.Tensor:
    if nearest_mode == "round_prefer_floor":
        index = torch.ceil(coords - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        index = torch.floor(coords + 0.5)
    elif nearest_mode == "floor":
        index = torch.floor(coords)
    elif nearest_mode == "ceil":
        index = torch.ceil(coords)
    else:
        raise NotImplementedError(f"nearest_mode {nearest_mode!r}")
    return index.long().clamp(0, length - 1)


def _linear_kernel(d: torch.Tensor) -> torch.Tensor:
    return (1 - d.abs()).clamp(min=0)


def _cubic_kernel(d: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with coefficient ``a``."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _kernel(mode: str, attrs):
    """Interpolation kernel and its radius."""
    if mode == "linear":
        return _linear_kernel, 1
    if mode == "cubic":
        return functools.partial(_cubic_kernel, a=attrs.get("cubic_coeff_a", -0.75)), 2
    raise NotImplementedError(f"Resize mode {mode!r}")


def _taps(coords: torch.Tensor, mode: str, axis: _Axis, length: int, attrs):
    """(index, weight), each [out, taps], for linear or cubic interpolation.

    Taps sit at offsets around base = ceil(x) - 1 so that the fraction lies in (0, 1];
    antialias stretches the kernel by 1 / scale when downscaling.
    """
    kernel, radius = _kernel(mode, attrs)
    antialias = bool(attrs.get("antialias", 0))
    stretch = min(axis.scale, 1.0) if antialias else 1.0
    first = math.floor(-radius / stretch) + 1
    offsets = torch.arange(first, 2 - first, device=coords.device)
    base = torch.ceil(coords) - 1
    fraction = coords - base
    weight = kernel((offsets - fraction[:, None]) * stretch)
    index = base.long()[:, None] + offsets
    if attrs.get("exclude_outside", 0):
        weight = torch.where((index >= 0) & (index < length), weight, torch.zeros_like(weight))
    if antialias or attrs.get("exclude_outside", 0):
        weight = weight / weight.sum(1, keepdim=True)
    return index.clamp(0, length - 1), weight


def _along(t: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    """Reshape a per-position vector to broadcast along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis] = -1
    return t.reshape(shape)


def _nearest_mode(axis: _Axis, attrs, legacy: bool) -> str:
    """Before opset 11, as onnxruntime does, nearest rounds up when shrinking and down otherwise."""
    if legacy:
        return "ceil" if axis.scale < 1 else "floor"
    return attrs.get("nearest_mode", "round_prefer_floor")


def _resize_axis(x: torch.Tensor, axis: _Axis, coords: torch.Tensor, attrs, legacy: bool) -> torch.Tensor:
    length = x.shape[axis.axis]
    mode = attrs.get("mode", "nearest")
    if mode == "nearest":
        index = _nearest_index(coords, _nearest_mode(axis, attrs, legacy), length)
        return x.index_select(axis.axis, index)
    index, weight = _taps(coords, mode, axis, length, attrs)
    weight = weight.to(x.dtype)
    out = 0
    for t in range(index.shape[1]):
        out = out + x.index_select(axis.axis, index[:, t]) * _along(weight[:, t], axis.axis, x.dim())
    return out


def _interpolate(x: torch.Tensor, axes: list[_Axis], attrs, legacy: bool) -> torch.Tensor:
    """Resize every requested axis; positions mapped outside the input in
    tf_crop_and_resize mode take ``extrapolation_value``.

    ``legacy`` (Upsample, Resize-10) maps coordinates asymmetrically.
    """
    transform = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    dtype = x.dtype
    if attrs.get("mode", "nearest") != "nearest" and not dtype.is_floating_point:
        x = x.float()
    outside = None
    for axis in axes:
        length = x.shape[axis.axis]
        if axis.size == length and axis.scale == 1.0 and transform != "tf_crop_and_resize":
            continue
        coords = _source_coords(transform, axis, length, x.device)
        x = _resize_axis(x, axis, coords, attrs, legacy)
        if transform == "tf_crop_and_resize":
            mask = _along((coords < 0) | (coords > length - 1), axis.axis, x.dim())
            outside = mask if outside is None else outside | mask
    if outside is not None:
        x = torch.where(outside, attrs.get("extrapolation_value", 0.0), x)
    return x if x.dtype == dtype else _to_integer(x, dtype)


def _to_integer(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamp to the type's range, then truncate like onnxruntime's C cast."""
    info = torch.iinfo(dtype)
    return x.clamp(info.min, info.max).to(dtype)


def _axes_from_sizes(x, axes: list[int], sizes: list[int], attrs) -> list[_Axis]:
    """Output sizes, possibly adjusted by keep_aspect_ratio_policy (opset 18)."""
    lengths = [x.shape[a] for a in axes]
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return [_Axis(a, s, s / n) for a, s, n in zip(axes, sizes, lengths, strict=True)]
    ratios = [s / n for s, n in zip(sizes, lengths, strict=True)]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    return [_Axis(a, math.floor(scale * n + 0.5), scale) for a, n in zip(axes, lengths, strict=True)]


def _present(t: torch.Tensor | None) -> list | None:
    """Values of an optional input; an empty tensor counts as absent."""
    return None if t is None or t.numel() == 0 else to_list(t)


@op_impl("Resize")
def resize(ctx, attrs, inputs):
    """Inputs: X, roi (opset 11+), scales, sizes; ``axes`` (opset 18) limits the axes."""
    x = inputs[0]
    if ctx.opset < 11:
        roi, scales, sizes = None, to_list(inputs[1]), None
    else:
        roi, scales, sizes = (_present(optional_input(inputs, i)) for i in (1, 2, 3))
    axes = normalize_axes(attrs.get("axes", list(range(x.dim()))), x.dim())
    if sizes is not None:
        requested = _axes_from_sizes(x, axes, sizes, attrs)
    else:
        # onnxruntime and the reference leave roi out of the output size, unlike the spec text.
        requested = [_Axis(a, math.floor(x.shape[a] * s), s) for a, s in zip(axes, scales, strict=True)]
    if roi:
        for i, axis in enumerate(requested):
            axis.roi = (roi[i], roi[i + len(axes)])
    return [_interpolate(x, requested, attrs, legacy=ctx.opset < 11)]


@op_impl("Upsample")
def upsample(ctx, attrs, inputs):
    """Scales are an attribute before opset 9 and an input since; asymmetric mapping."""
    x = inputs[0]
    scales = attr_or_input(ctx, attrs, inputs, "scales", 1, 9)
    requested = [_Axis(a, math.floor(n * s), s) for a, (n, s) in enumerate(zip(x.shape, scales, strict=True))]
    return [_interpolate(x, requested, attrs, legacy=True)]
