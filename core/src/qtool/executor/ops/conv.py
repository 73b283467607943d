"""Conv and ConvTranspose over 1D, 2D and 3D inputs."""

from __future__ import annotations

import torch.nn.functional as F

from ._common import optional_input
from ._spatial import explicit_pads, pad_spatial, resolve_pads, span, strides_and_dilations
from .registry import op_impl

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op_impl("Conv")
def conv(ctx, attrs, inputs):
    x, w, b = inputs[0], inputs[1], optional_input(inputs, 2)
    rank = x.dim() - 2
    strides, dilations = strides_and_dilations(attrs, rank)
    begins, ends = resolve_pads(attrs, list(x.shape[2:]), list(w.shape[2:]), strides, dilations)
    if begins == ends:
        padding = begins
    else:  # torch only pads symmetrically
        x, padding = pad_spatial(x, begins, ends), 0
    return [_CONV[rank](x, w, b, strides, padding, dilations, attrs.get("group", 1))]


def _transpose_pads(attrs, sizes, full, output_padding, strides) -> tuple[list[int], list[int]]:
    """Pads to cut from the full transposed-conv output, per the ONNX equations."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    output_shape = attrs.get("output_shape")
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return explicit_pads(attrs, len(sizes))
    if output_shape is None:
        output_shape = [size * s for size, s in zip(sizes, strides, strict=True)]
    begins, ends = [], []
    for n, op, target in zip(full, output_padding, output_shape[-len(sizes) :], strict=True):
        total = n + op - target
        half = total // 2
        begins.append(half if auto_pad == "SAME_UPPER" else total - half)
        ends.append(total - half if auto_pad == "SAME_UPPER" else half)
    return begins, ends


@op_impl("ConvTranspose")
def conv_transpose(ctx, attrs, inputs):
    """Compute the unpadded output, then crop ``pads`` and append ``output_padding``."""
    x, w, b = inputs[0], inputs[1], optional_input(inputs, 2)
    rank = x.dim() - 2
    strides, dilations = strides_and_dilations(attrs, rank)
    output_padding = list(attrs.get("output_padding", [0] * rank))
    sizes, kernel = list(x.shape[2:]), list(w.shape[2:])
    full = [(n - 1) * s + span(k, d) for n, k, s, d in zip(sizes, kernel, strides, dilations, strict=True)]
    begins, ends = _transpose_pads(attrs, sizes, full, output_padding, strides)
    y = _CONV_TRANSPOSE[rank](x, w, None, strides, 0, 0, attrs.get("group", 1), dilations)
    y = pad_spatial(y, [-p for p in begins], [op - p for op, p in zip(output_padding, ends, strict=True)])
    if b is not None:
        y = y + b.reshape(1, -1, *[1] * rank)
    return [y]
