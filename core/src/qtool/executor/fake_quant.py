"""Applying tensor quantization configs to tensors: the simulation half of the executor.

Static parameters are turned into device tensors once; DYNAMIC schemes take their
range from each tensor as it comes (per tensor, per channel or per block).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..quant import (
    QuantizationPolicy,
    RoundingPolicy,
    TensorQuantizationConfig,
    compute_scale_offset,
    fake_quantize,
)
from ..quant.scheme import QuantScheme

Quantizer = Callable[[torch.Tensor], torch.Tensor]

def is_dynamic(tqc: TensorQuantizationConfig) -> bool:
    return bool(tqc.scheme.policy & QuantizationPolicy.DYNAMIC)


def make_quantizer(tqc: TensorQuantizationConfig, device: torch.device) -> Quantizer:
    """A function fake-quantizing a tensor with ``tqc`` (its parameters read now, or per call if DYNAMIC)."""
    scheme = tqc.scheme
    if is_dynamic(tqc):
        return lambda x: fake_quantize(x, scheme, *dynamic_params(x, scheme))
    scale, offset = tqc.scale, tqc.offset
    if scale is None or offset is None:
        raise ValueError(f"{tqc!r} is quantizing but has no scale/offset")
    scale_t = torch.as_tensor(np.asarray(scale, dtype=np.float32), device=device)
    offset_t = torch.as_tensor(np.asarray(offset, dtype=np.float32), device=device)
    if IntegerQuantizer.handles(scheme):
        return IntegerQuantizer(scheme, scale_t, offset_t)
    return lambda x: fake_quantize(x, scheme, scale_t, offset_t)


class IntegerQuantizer:
    """``fake_quantize`` for static integer schemes of up to 16 bits, rounding half to even: same values, faster.

    The zero point moves into the clamp bounds, since for r = round(x / s)
    clamp(r + z, qmin, qmax) - z == clamp(r, qmin - z, qmax - z) exactly: below
    2**24 every term is an integer float32 holds, and beyond both sides saturate
    alike. So one buffer and four passes instead of six allocations. Float32
    tensors outside autograd only; anything else goes through ``fake_quantize``.
    """

    def __init__(self, scheme: QuantScheme, scale: torch.Tensor, offset: torch.Tensor) -> None:
        self.scheme, self.scale, self.offset = scheme, scale, offset
        if not scheme.is_per_channel:
            scale, offset = scale.reshape(()), offset.reshape(())
        low, high = scheme.quant_min - offset, scheme.quant_max - offset
        self.params = (scale, float(low), float(high)) if offset.ndim == 0 else (scale, low, high)

    @staticmethod
    def handles(scheme: QuantScheme) -> bool:
        return (not scheme.is_floating and scheme.num_of_bits <= 16 and scheme.rounding is RoundingPolicy.HALF_EVEN
                and not scheme.policy & QuantizationPolicy.PER_BLOCK)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or (x.requires_grad and torch.is_grad_enabled()):
            return fake_quantize(x, self.scheme, self.scale, self.offset)
        scale, low, high = (self._along_channels(p, x) for p in self.params)
        return torch.div(x, scale).round_().clamp_(low, high).mul_(scale)

    def _along_channels(self, param, x: torch.Tensor):
        """A per-channel parameter shaped to broadcast on the channel axis of ``x``."""
        if not isinstance(param, torch.Tensor) or param.ndim == 0:
            return param
        shape = [1] * x.ndim
        shape[self.scheme.channel_axis % x.ndim] = -1
        return param.reshape(shape)


def dynamic_params(x: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset covering ``x``'s own range, at the scheme's granularity."""
    lo, hi = _range(x.detach().float(), scheme)
    scale, offset = compute_scale_offset(scheme, lo.cpu().numpy(), hi.cpu().numpy())
    return (torch.as_tensor(scale, device=x.device),
            torch.as_tensor(offset.astype(np.float32), device=x.device))


def _range(x: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    if not scheme.is_per_channel:
        return torch.aminmax(x)
    axis = scheme.channel_axis % x.ndim
    if not scheme.policy & QuantizationPolicy.PER_BLOCK:
        rows = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        return torch.aminmax(rows, dim=1)
    # one range per block of ``block_size`` along the axis, per position of the other axes
    size, blocks = scheme.block_size, -(-x.shape[axis] // scheme.block_size)
    moved = x.movedim(axis, -1)
    pad = blocks * size - moved.shape[-1]
    lo_in = torch.nn.functional.pad(moved, (0, pad), value=float("inf"))
    hi_in = torch.nn.functional.pad(moved, (0, pad), value=float("-inf"))
    lo = lo_in.reshape(*moved.shape[:-1], blocks, size).amin(-1).movedim(-1, axis)
    hi = hi_in.reshape(*moved.shape[:-1], blocks, size).amax(-1).movedim(-1, axis)
    return lo, hi
