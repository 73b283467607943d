"""Quantization arithmetic shared by simulation, calibration and export.

All functions take a QuantScheme and per-tensor or per-channel parameters.
Scale and offset are numpy arrays (shape () or (C,)). Tensors are numpy arrays or torch tensors: each function
computes in the namespace of the tensor it is given (:func:`namespace`), so that calibration and export, which
hold numpy arrays, never import torch, while the executor's simulation stays on its device.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from .policy import QuantizationPolicy as P
from .policy import RoundingPolicy
from .scheme import QuantScheme

_TINY_SCALE = np.finfo(np.float32).tiny  # the smallest normal float32: a scale at or below it is no scale (as ORT)


def namespace(x: Any) -> ModuleType:
    """torch for a torch tensor (torch is then imported already), numpy for anything else."""
    return sys.modules["torch"] if type(x).__module__.startswith("torch") else np


def round_values(x, rounding: RoundingPolicy):
    """Round to integers with the given tie-breaking policy (numpy array or torch tensor, same kind out)."""
    xp = namespace(x)
    if rounding is RoundingPolicy.HALF_EVEN:
        return xp.round(x)
    if rounding is RoundingPolicy.HALF_UP:
        return xp.floor(x + 0.5)
    if rounding is RoundingPolicy.HALF_DOWN:
        return xp.ceil(x - 0.5)
    if rounding is RoundingPolicy.HALF_TOWARD_ZERO:
        return xp.sign(x) * xp.ceil(xp.abs(x) - 0.5)
    if rounding is RoundingPolicy.HALF_AWAY_FROM_ZERO:
        return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)
    if rounding is RoundingPolicy.CEIL:
        return xp.ceil(x)
    return xp.floor(x)


def round_array(x: np.ndarray, rounding: RoundingPolicy) -> np.ndarray:
    """:func:`round_values` of ``x`` as float64."""
    return round_values(np.asarray(x, dtype=np.float64), rounding)


def compute_scale_offset(scheme: QuantScheme, min_val, max_val) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that cover [min_val, max_val] (elementwise for per-channel).

    The range is first widened to contain 0 so that zero is exact. Symmetric
    schemes put the zero point at the centre of the code range; asymmetric ones
    use ``zp = quant_min - round(min / scale)``, clipped to the code range, which
    is right for signed ranges such as int8 [-128, 127].

    A symmetric per-block scheme on the full signed range (the weight-only blocks of
    ``[weight_only] symmetric = true``) uses every code, as ONNX Runtime's MatMulNBits quantizer
    does: scale = the block's largest magnitude / 2^(b-1), so that the extreme lands exactly on
    the end code, with zero point 0 when that extreme is negative (it is code -2^(b-1)) and -1
    when it is positive (code 2^(b-1)-1 then stands for +2^(b-1) steps). See
    :func:`full_range_blocks`.
    """
    lo = np.minimum(np.asarray(min_val, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(max_val, dtype=np.float64), 0.0)
    qmin, qmax = float(scheme.quant_min), float(scheme.quant_max)
    if scheme.is_floating:
        scale = np.maximum(np.abs(lo), np.abs(hi)) / qmax
        offset = np.zeros_like(scale)
    elif full_range_blocks(scheme):
        scale = np.maximum(-lo, hi) / -qmin
        offset = np.where(hi > -lo, -1.0, 0.0)
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


def full_range_blocks(scheme: QuantScheme) -> bool:
    """A symmetric integer per-block scheme on the full signed range [-2^(b-1), 2^(b-1)-1]: its blocks use every
    code (ONNX Runtime's symmetric MatMulNBits rule, scale = extreme / -2^(b-1)), not the restricted
    [-(2^(b-1)-1), 2^(b-1)-1] of the other symmetric schemes (a 4-bit block lost ~1 dB of output SNR to it)."""
    bits = scheme.num_of_bits
    return (not scheme.is_floating and scheme.is_symmetric and bool(scheme.policy & P.PER_BLOCK) and bits >= 2
            and scheme.quant_min == -(2 ** (bits - 1)) and scheme.quant_max == 2 ** (bits - 1) - 1)


def broadcast_parameter(param, x, scheme: QuantScheme):
    """Reshape a per-channel or per-block parameter so it broadcasts against ``x`` (in ``x``'s namespace)."""
    xp = namespace(x)
    if xp is np:
        p = np.asarray(param)
    else:
        p = xp.as_tensor(param, device=x.device)
    if p.ndim == 0 or not scheme.is_per_channel:
        return p.reshape(())
    axis = scheme.channel_axis % x.ndim
    if scheme.policy & P.PER_BLOCK:
        if xp is np:
            return np.repeat(p, scheme.block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
        return p.repeat_interleave(scheme.block_size, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.ndim
    shape[axis] = -1
    return p.reshape(shape)


def round_to_float_format(x, exponent_bits: int, mantissa_bits: int, max_value: float,
                          rounding: RoundingPolicy = RoundingPolicy.HALF_EVEN):
    """Round ``x`` to the nearest value of an eXmY format, saturating at ``max_value``."""
    xp = namespace(x)
    bias = 2 ** (exponent_bits - 1) - 1
    magnitude = xp.clip(xp.abs(x), None, max_value)
    safe = xp.where(magnitude > 0, magnitude, xp.ones_like(magnitude))
    exponent = xp.clip(xp.floor(xp.log2(safe)), 1 - bias, None)
    step = xp.exp2(exponent - mantissa_bits)
    rounded = xp.clip(round_values(magnitude / step, rounding) * step, None, max_value)
    return xp.sign(x) * rounded


def _as_float(x, dtype_name: str):
    """``x`` converted to the float type named (a copy only where the type differs)."""
    if namespace(x) is np:
        return np.asarray(x, dtype=dtype_name)
    return x.to(getattr(sys.modules["torch"], dtype_name))


def fake_quantize(x, scheme: QuantScheme, scale, offset):
    """Quantize then dequantize ``x`` (float in, float out, same dtype; numpy array or torch tensor)."""
    xp = namespace(x)
    work = _as_float(x, "float32")
    s = _as_float(broadcast_parameter(scale, work, scheme), "float32")
    if scheme.is_floating:
        y = round_to_float_format(work / s, scheme.exponent_bits, scheme.mantissa_bits, scheme.quant_max,
                                  scheme.rounding) * s
    else:
        z = _as_float(broadcast_parameter(offset, work, scheme), "float32")
        q = xp.clip(round_values(work / s, scheme.rounding) + z, scheme.quant_min, scheme.quant_max)
        y = (q - z) * s
    return y.astype(x.dtype, copy=False) if xp is np else y.to(x.dtype)


def quantize_to_codes(x: np.ndarray, scheme: QuantScheme, scale, offset) -> np.ndarray:
    """Integer codes of ``x`` (int64) for a LINEAR scheme, as stored at export.

    Up to 16 bits the division is done in float32, as ONNX QuantizeLinear and
    :func:`fake_quantize` do, so that ties round the same way; wider codes
    (int32 bias) need float64 to stay exact.
    """
    dtype = np.float32 if scheme.num_of_bits <= 16 else np.float64
    t = np.asarray(x, dtype=dtype)
    s = broadcast_parameter(np.asarray(scale, dtype=dtype), t, scheme)
    z = broadcast_parameter(np.asarray(offset, dtype=dtype), t, scheme)
    q = np.clip(round_values(t / s, scheme.rounding) + z, scheme.quant_min, scheme.quant_max)
    return q.astype(np.int64)


def dequantize_codes(q: np.ndarray, scheme: QuantScheme, scale, offset) -> np.ndarray:
    """Float values of integer codes (float32)."""
    t = np.asarray(q, dtype=np.float64)
    s = broadcast_parameter(np.asarray(scale, dtype=np.float64), t, scheme)
    z = broadcast_parameter(np.asarray(offset, dtype=np.float64), t, scheme)
    return ((t - z) * s).astype(np.float32)
