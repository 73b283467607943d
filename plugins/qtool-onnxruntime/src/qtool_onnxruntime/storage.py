"""Which ONNX type stores a scheme's codes, and where (opset, domain) ONNX Runtime has Q/DQ for it.

Facts checked against ONNX Runtime 1.32 on CPU by this plugin's tests:
uint8/int8 from opset 10 (per-axis from 13, blocked from 21); float8 e4m3fn/e5m2
from 19; 16-bit and 4-bit from 21, and below 21 through the com.microsoft
domain (per-tensor and per-axis, never blocked); 2-bit from 25; int32 for
DequantizeLinear only (bias). No Q/DQ kernels at opset 28. This platform writes Q/DQ on float32 values and
scales (a float16 or bfloat16 model is written in float32, see :mod:`.half`); Q/DQ take no float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper
from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantScheme

MS_DOMAIN = "com.microsoft"
LOWEST_OPSET = 10  # QuantizeLinear / DequantizeLinear exist from here
# the lowest opset written where the user names none: ONNX Runtime's QDQ fusions add opset-11 ops to the graph they
# optimize (a Gemm's float bias quantized through Round), and at opset 10 it refused the model it had rewritten
DEFAULT_LOWEST_OPSET = 11
HIGHEST_OPSET = 27  # ONNX Runtime 1.32 has no Q/DQ kernels at opset 28
PER_AXIS_OPSET = 13
BLOCKED_OPSET = 21
HALF_TYPES = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})
FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class StorageType:
    """An ONNX element type that Q/DQ nodes can carry."""

    name: str
    elem_type: int
    dtype: np.dtype
    opset: int  # lowest ai.onnx opset whose Q/DQ take it
    ms_domain: bool = False  # com.microsoft Q/DQ take it below ``opset``
    dequantize_only: bool = False
    float_format: tuple[int, int] | None = None  # (exponent bits, mantissa bits)

    @functools.cached_property
    def limits(self) -> tuple[float, float]:
        """The saturation range of QuantizeLinear into this type (ml_dtypes' iinfo took 2 us a call, a thousand
        calls a validation of a small transformer)."""
        if self.float_format:
            info = ml_dtypes.finfo(self.dtype)
            return float(info.min), float(info.max)
        info = ml_dtypes.iinfo(self.dtype)
        return float(info.min), float(info.max)


def _int(name: str, elem: int, dtype, opset: int, **kw) -> StorageType:
    return StorageType(name, elem, np.dtype(dtype), opset, **kw)


INTEGER_TYPES = (
    _int("int2", TensorProto.INT2, ml_dtypes.int2, 25),
    _int("uint2", TensorProto.UINT2, ml_dtypes.uint2, 25),
    _int("int4", TensorProto.INT4, ml_dtypes.int4, 21, ms_domain=True),
    _int("uint4", TensorProto.UINT4, ml_dtypes.uint4, 21, ms_domain=True),
    _int("int8", TensorProto.INT8, np.int8, 10),
    _int("uint8", TensorProto.UINT8, np.uint8, 10),
    _int("int16", TensorProto.INT16, np.int16, 21, ms_domain=True),
    _int("uint16", TensorProto.UINT16, np.uint16, 21, ms_domain=True),
    _int("int32", TensorProto.INT32, np.int32, 10, dequantize_only=True),
)
FLOAT_TYPES = (
    StorageType("float8e4m3fn", TensorProto.FLOAT8E4M3FN, np.dtype(ml_dtypes.float8_e4m3fn), 19, float_format=(4, 3)),
    StorageType("float8e5m2", TensorProto.FLOAT8E5M2, np.dtype(ml_dtypes.float8_e5m2), 19, float_format=(5, 2)),
)
EIGHT_BIT = frozenset({"int8", "uint8"})
# the code types ONNX Runtime's Shape and Size kernels read at every opset: none of theirs takes a 4- or 2-bit
# type, Size no float8, and Shape no float8 below opset 21 (ORT 1.32; the plugin's test_ort_export.py)
SHAPE_READABLE = frozenset({"int8", "uint8", "int16", "uint16"})


@functools.cache  # schemes are frozen: validation asks for the same few schemes once per tensor
def storage_type(scheme: QuantScheme, *, stored: bool = False) -> StorageType | None:
    """The narrowest type holding ``scheme``'s codes (None: no Q/DQ type can).

    Integer schemes take the narrowest type of their signedness whose range
    holds [quant_min, quant_max]; int32 only for parameters ``stored`` as codes
    (a bias), since QuantizeLinear has no int32 output.
    """
    if scheme.is_floating:
        fmt = (scheme.exponent_bits, scheme.mantissa_bits)
        return next((t for t in FLOAT_TYPES if t.float_format == fmt and t.limits[1] == scheme.quant_max), None)
    for candidate in INTEGER_TYPES:
        lo, hi = candidate.limits
        if (lo < 0) != scheme.is_signed or candidate.dequantize_only and not stored:
            continue
        if lo <= scheme.quant_min and scheme.quant_max <= hi:
            return candidate
    return None


def codes_type(dtype) -> str | None:
    """The name of the storage type whose codes have numpy ``dtype`` (None: none, or ``dtype`` unknown)."""
    if dtype is None:
        return None
    return next((t.name for t in (*INTEGER_TYPES, *FLOAT_TYPES) if t.dtype == np.dtype(dtype)), None)


def granularity(scheme: QuantScheme) -> str:
    if scheme.policy & P.PER_BLOCK:
        return "per-block"
    return "per-axis" if scheme.policy & P.PER_CHANNEL else "per-tensor"


def value_type(var) -> np.dtype:
    """The float type of the values a tensor's Q/DQ take (and of their scale) in the written model: float32, also
    for a float16 or bfloat16 tensor (the model is written in float32, see :mod:`.half`), and float64 for a float64
    tensor (which no Q/DQ takes)."""
    return np.dtype(np.float64) if stated_type(var) == np.float64 else FLOAT32


def stated_type(var) -> np.dtype | None:
    """A tensor's element type as the model states it; where it does not (no value_info), its producer's: a Cast's
    target, else that of its first float input (float ops keep their inputs' type), found walking up."""
    while var is not None:
        if var.dtype is not None:
            return np.dtype(var.dtype)
        op = var.producer
        if op is None:
            return None
        if op.op_type == "Cast" and "to" in op.attributes:
            return np.dtype(helper.tensor_dtype_to_np_dtype(op.attributes["to"]))
        if op.op_type == "CastLike" and len(op.inputs) > 1:
            var = op.inputs[1]
            continue
        var = next((v for v in op.inputs if v is not None and (v.dtype is None or _is_float(np.dtype(v.dtype)))),
                   None)
    return None


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype in HALF_TYPES


def lowest_opset(stype: StorageType, scheme: QuantScheme) -> int:
    """The lowest opset that carries ``stype`` with ``scheme``'s granularity, com.microsoft counted."""
    kind = granularity(scheme)
    if kind == "per-block":
        return max(stype.opset, BLOCKED_OPSET)
    type_opset = LOWEST_OPSET if stype.ms_domain else stype.opset
    return max(type_opset, PER_AXIS_OPSET if kind == "per-axis" else LOWEST_OPSET)


def domain_at(stype: StorageType, scheme: QuantScheme, opset: int,
              values: np.dtype = FLOAT32) -> str | None:
    """The Q/DQ domain carrying ``stype`` on ``values`` at ``opset`` ("" or com.microsoft), None when neither can."""
    kind = granularity(scheme)
    if kind == "per-axis" and opset < PER_AXIS_OPSET or kind == "per-block" and opset < BLOCKED_OPSET:
        return None
    if values == np.float64:
        return None
    if opset >= stype.opset:
        return ""
    return MS_DOMAIN if stype.ms_domain and kind != "per-block" else None


def placement_problem(stype: StorageType, scheme: QuantScheme, opset: int,
                      values: np.dtype = FLOAT32) -> str | None:
    """Why ``stype`` with ``scheme``'s granularity on ``values`` cannot be written at ``opset`` (None: it can)."""
    if domain_at(stype, scheme, opset, values) is not None:
        return None
    kind = granularity(scheme)
    if values == np.float64:
        return "the tensor is float64, and QuantizeLinear/DequantizeLinear take float32, float16 and bfloat16 only"
    if kind == "per-block" and opset < BLOCKED_OPSET:
        return f"per-block Q/DQ (block_size) needs opset {BLOCKED_OPSET}, the model is written at opset {opset}"
    if kind == "per-axis" and opset < PER_AXIS_OPSET:
        return f"per-axis Q/DQ needs opset {PER_AXIS_OPSET}, the model is written at opset {opset}"
    where = " (the com.microsoft Q/DQ have no per-block form)" if stype.ms_domain else ""
    return f"{stype.name} Q/DQ need opset {stype.opset}{where}, the model is written at opset {opset}"
