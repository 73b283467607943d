"""Quantization arithmetic shared by simulation, calibration and export.

All functions take a QuantScheme and per-tensor or per-channel parameters.
Scale and offset are numpy arrays (shape () or (C,)); tensors are torch.
"""

from __future__ import annotations

import numpy as np
import torch

from .policy import QuantizationPolicy as P
from .policy import RoundingPolicy
from .scheme import QuantScheme

_TINY_SCALE = np.float32(2.0**-32)


def round_tensor(x: torch.Tensor, rounding: RoundingPolicy) -> torch.Tensor:
    """Round to integers with the given tie-breaking policy."""
    if rounding is RoundingPolicy.HALF_EVEN:
        return torch.round(x)
    if rounding is RoundingPolicy.HALF_UP:
        return torch.floor(x + 0.5)
    if rounding is RoundingPolicy.HALF_DOWN:
        return torch.ceil(x - 0.5)
    if rounding is RoundingPolicy.HALF_TOWARD_ZERO:
        return torch.sign(x) * torch.ceil(x.abs() - 0.5)
    if rounding is RoundingPolicy.HALF_AWAY_FROM_ZERO:
        return torch.sign(x) * torch.floor(x.abs() + 0.5)
    if rounding is RoundingPolicy.CEIL:
        return torch.ceil(x)
    return torch.floor(x)


def round_array(x: np.ndarray, rounding: RoundingPolicy) -> np.ndarray:
    """numpy version of :func:`round_tensor` (float64 in, float64 out)."""
    return round_tensor(torch.from_numpy(np.asarray(x, dtype=np.float64)), rounding).numpy()


def compute_scale_offset(scheme: QuantScheme, min_val, max_val) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that cover [min_val, max_val] (elementwise for per-channel).

    The range is first widened to contain 0 so that zero is exact. Symmetric
    schemes put the zero point at the centre of the code range; asymmetric ones
    use ``zp = quant_min - round(min / scale)``, clipped to the code range, which
    is right for signed ranges such as int8 [-128, 127].
    """
    lo = np.minimum(np.asarray(min_val, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(max_val, dtype=np.float64), 0.0)
    qmin, qmax = float(scheme.quant_min), float(scheme.quant_max)
    if scheme.is_floating:
        scale = np.maximum(np.abs(lo), np.abs(hi)) / qmax
        offset = np.zeros_like(scale)
    elif scheme.is_symmetric:
        offset = np.full_like(lo, np.ceil((qmin + qmax) / 2.0))
        half_span = np.minimum(qmax - offset, offset - qmin)
        half_span = np.where(half_span > 0, half_span, np.maximum(qmax - offset, offset - qmin))  # 1-bit
        scale = np.maximum(np.abs(lo), np.abs(hi)) / half_span
    else:
        scale = (hi - lo) / (qmax - qmin)
        offset = None
    scale = np.where(scale > _TINY_SCALE, scale, np.float64(_TINY_SCALE) if scheme.is_floating else 1.0)
    if scheme.policy & P.POWER_OF_2:
        scale = np.exp2(np.ceil(np.log2(scale)))
    if offset is None:
        offset = np.clip(qmin - round_array(lo / scale, scheme.rounding), qmin, qmax)
    return scale.astype(np.float32), offset.astype(np.int32 if not scheme.is_floating else np.float32)


def _broadcast(param: np.ndarray | torch.Tensor, x: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Reshape a per-channel or per-block parameter so it broadcasts against ``x``."""
    p = torch.as_tensor(param, device=x.device)
    if p.ndim == 0 or not scheme.is_per_channel:
        return p.reshape(())
    axis = scheme.channel_axis % x.ndim
    if scheme.policy & P.PER_BLOCK:
        p = p.repeat_interleave(scheme.block_size, dim=axis).narrow(axis, 0, x.shape[axis])
        return p
    shape = [1] * x.ndim
    shape[axis] = -1
    return p.reshape(shape)


def round_to_float_format(x: torch.Tensor, exponent_bits: int, mantissa_bits: int, max_value: float,
                          rounding: RoundingPolicy = RoundingPolicy.HALF_EVEN) -> torch.Tensor:
    """Round ``x`` to the nearest value of an eXmY format, saturating at ``max_value``."""
    bias = 2 ** (exponent_bits - 1) - 1
    magnitude = x.abs().clamp(max=max_value)
    safe = torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
    exponent = torch.floor(torch.log2(safe)).clamp(min=1 - bias)
    step = torch.exp2(exponent - mantissa_bits)
    rounded = (round_tensor(magnitude / step, rounding) * step).clamp(max=max_value)
    return torch.sign(x) * rounded


def fake_quantize(x: torch.Tensor, scheme: QuantScheme, scale, offset) -> torch.Tensor:
    """Quantize then dequantize ``x`` (float in, float out, same dtype)."""
    work = x.float()
    s = _broadcast(scale, work, scheme).to(work.dtype)
    if scheme.is_floating:
        y = round_to_float_format(work / s, scheme.exponent_bits, scheme.mantissa_bits, scheme.quant_max,
                                  scheme.rounding) * s
    else:
        z = _broadcast(offset, work, scheme).to(work.dtype)
        q = torch.clamp(round_tensor(work / s, scheme.rounding) + z, scheme.quant_min, scheme.quant_max)
        y = (q - z) * s
    return y.to(x.dtype)


def quantize_to_codes(x: np.ndarray, scheme: QuantScheme, scale, offset) -> np.ndarray:
    """Integer codes of ``x`` (int64) for a LINEAR scheme, as stored at export.

    Up to 16 bits the division is done in float32, as ONNX QuantizeLinear and
    :func:`fake_quantize` do, so that ties round the same way; wider codes
    (int32 bias) need float64 to stay exact.
    """
    dtype = np.float32 if scheme.num_of_bits <= 16 else np.float64
    t = torch.from_numpy(np.asarray(x, dtype=dtype))
    s = _broadcast(np.asarray(scale, dtype=dtype), t, scheme)
    z = _broadcast(np.asarray(offset, dtype=dtype), t, scheme)
    q = torch.clamp(round_tensor(t / s, scheme.rounding) + z, scheme.quant_min, scheme.quant_max)
    return q.numpy().astype(np.int64)


def dequantize_codes(q: np.ndarray, scheme: QuantScheme, scale, offset) -> np.ndarray:
    """Float values of integer codes (float32)."""
    t = torch.from_numpy(np.asarray(q, dtype=np.float64))
    s = _broadcast(np.asarray(scale, dtype=np.float64), t, scheme)
    z = _broadcast(np.asarray(offset, dtype=np.float64), t, scheme)
    return ((t - z) * s).numpy().astype(np.float32)
