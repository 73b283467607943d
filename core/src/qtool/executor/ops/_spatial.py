"""Stride, dilation and padding bookkeeping shared by convolutions and pools."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def strides_and_dilations(attrs: dict[str, Any], rank: int) -> tuple[list[int], list[int]]:
    return list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank))


def span(kernel: int, dilation: int) -> int:
    """Extent of a dilated kernel."""
    return (kernel - 1) * dilation + 1


def explicit_pads(attrs: dict[str, Any], rank: int) -> tuple[list[int], list[int]]:
    """(begins, ends) from the ``pads`` attribute (zeros when absent, e.g. auto_pad=VALID)."""
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    return pads[:rank], pads[rank:]


def resolve_pads(
    attrs: dict[str, Any],
    sizes: list[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
) -> tuple[list[int], list[int]]:
    """(begins, ends) padding per spatial axis from ``pads`` or ``auto_pad``."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + span(k, d) - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins, ends
    return explicit_pads(attrs, len(sizes))


def pad_spatial(x: torch.Tensor, begins: list[int], ends: list[int], value: float = 0.0) -> torch.Tensor:
    """Pad (or crop, for negative amounts) the trailing spatial axes of ``x``."""
    pairs = [p for b, e in reversed(list(zip(begins, ends, strict=True))) for p in (b, e)]
    if not any(pairs):
        return x
    return F.pad(x, pairs, value=value)
