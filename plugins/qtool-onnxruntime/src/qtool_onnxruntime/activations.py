"""Relu / Clip fused after a computing op: whether dropping them is exact.

Quantizing saturates at the ends of the code range, so an activation that
clips at bounds ``a`` and ``b`` is redundant before its QuantizeLinear exactly
when ``a`` quantizes to the lowest code and ``b`` to the highest: then
``Q(clip(x)) == Q(x)`` for every x. For Relu that is "zero point == lowest
code". Which lowest/highest code: the scheme's range when qtool drops the
activation, the storage type's range when ONNX Runtime judges it.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from qtool.ops import is_compute
from qtool.quant import TensorQuantizationConfig, round_array

from .configs import active, written_config
from .storage import INTEGER_TYPES, storage_type

ACTIVATIONS = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class FusedActivation:
    """``op`` (Relu/Clip) reads the float output of computing op ``producer`` and quantizes its own output."""

    op: object
    producer: object
    config: TensorQuantizationConfig
    bounds: tuple[float, float]


def fused_activations(graph, settled: bool) -> list[FusedActivation]:
    """Every Relu/Clip with constant bounds whose input is a computing op's unquantized, unshared output."""
    found = []
    for op in graph.topological_order():
        source = op.inputs[0] if op.op_type in ACTIVATIONS and op.quant is not None and op.inputs else None
        producer = source.producer if source is not None else None
        if producer is None or not is_compute(producer) or producer.quant is None:
            continue
        if not producer.quant.quantized or len(source.consumers) != 1 or source in graph.outputs:
            continue
        if written_config(source, settled) is not None or active(op.quant.inputs[0], settled):
            continue
        config, bounds = op.quant.outputs[0], activation_bounds(op)
        if active(config, settled) and bounds is not None:
            found.append(FusedActivation(op, producer, config, bounds))
    return found


def activation_bounds(op) -> tuple[float, float] | None:
    """Relu (0, inf); Clip its min/max from constant inputs or (opset < 11) attributes; None when not constant."""
    if op.op_type == "Relu":
        return 0.0, float("inf")
    bounds = []
    for index, key, default in ((1, "min", -np.inf), (2, "max", np.inf)):
        var = op.inputs[index] if index < len(op.inputs) else None
        if var is not None and not var.is_parameter:
            return None
        value = var.value if var is not None else op.attributes.get(key, default)
        bounds.append(float(np.asarray(value).reshape(())))
    return bounds[0], bounds[1]


def clips_exactly(act: FusedActivation, limits: tuple[float, float] | None = None) -> bool:
    """True when quantizing with ``act.config`` already clips at the activation's bounds.

    ``limits`` are the lowest and highest code to reach (default: the scheme's
    range). Before calibration the answer is predicted from the scheme: an
    asymmetric integer grid calibrated on a Relu/Clip(0, b) output starts at 0.
    """
    tqc, scheme = act.config, act.config.scheme
    if scheme.is_floating or scheme.is_per_channel:
        return False
    low, high = limits or (scheme.quant_min, scheme.quant_max)
    if not tqc.is_settled:
        return not scheme.is_symmetric and act.bounds[0] == 0.0 and (low, high) == (scheme.quant_min, scheme.quant_max)
    with np.errstate(over="ignore"):
        codes = round_array(np.asarray(act.bounds) / float(tqc.scale), scheme.rounding) + float(tqc.offset)
    return codes[0] <= low and codes[1] >= high


RELU_FUSION_CHECKED = frozenset({"int8", "uint8", "int16", "uint16"})
FLOAT8_TYPES = frozenset({TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
                          TensorProto.FLOAT8E5M2FNUZ})


def relu_fusion_breaks(domain: str, zero_point) -> bool:
    """True when ONNX Runtime's Relu/Clip + QuantizeLinear fusion goes wrong in front of this QuantizeLinear.

    ORT removes a Relu or Clip before a QuantizeLinear (ai.onnx or com.microsoft)
    with a single zero point when the grid already clips there; it checks that for 8- and
    16-bit types only. For 4-bit, 2-bit and float8 ones it drops a Relu
    unchecked (results go wrong) and fails to load a model with such a Clip
    (``GetQConstantLowerUpper``: unexpected zero point type). The export then
    quantizes first and applies the activation after the pair: the same numbers,
    since quantizing is monotone, ``Q(clip(x, a, b)) == clip(Q(x), Q(a), Q(b))``
    (a Clip's bounds are moved onto the grid; 0, Relu's bound, is on every grid).
    """
    if domain not in ("", "ai.onnx", "com.microsoft") or zero_point is None or len(zero_point.dims) != 0:
        return False
    checked = {t.elem_type for t in INTEGER_TYPES if t.name in RELU_FUSION_CHECKED}
    return zero_point.data_type not in checked | {TensorProto.INT32}


def on_grid(bound: float, scale: TensorProto, zero_point: TensorProto) -> np.ndarray:
    """``bound`` quantized and dequantized as ONNX Runtime does with this scale and zero point (float32)."""
    s = numpy_helper.to_array(scale).astype(np.float32)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(zero_point.data_type))
    scaled = np.float32(bound) / s
    if zero_point.data_type in FLOAT8_TYPES:
        top = float(ml_dtypes.finfo(dtype).max)  # QuantizeLinear saturates by default
        return np.clip(scaled, -top, top).astype(dtype).astype(np.float32) * s
    z = numpy_helper.to_array(zero_point).astype(np.float32)
    info = ml_dtypes.iinfo(dtype)
    return ((np.clip(np.rint(scaled) + z, info.min, info.max) - z) * s).astype(np.float32)


def relu_pair_moves(op, tqc: TensorQuantizationConfig | None) -> bool:
    """The same question asked of a Relu's or Clip's output config before anything is written."""
    if op.op_type not in ACTIVATIONS or tqc is None or tqc.scheme.is_per_channel:
        return False
    stype = storage_type(tqc.scheme)
    return stype is not None and stype.name not in RELU_FUSION_CHECKED
