"""int32 biases as ONNX Runtime's integer kernels read them.

QLinearConv and QGemm take the bias DequantizeLinear's int32 codes and assume
scale = s_in * s_w and zero point 0. ORT checks that for Conv (falling back to
float) but not for Gemm / MatMul + Add, whose results are then wrong (this
plugin's tests show it). A bias quantized any other way is therefore written
as float values on its grid, which every kernel reads right.

ORT's WeightBiasQuantization pass rewrites a Conv/ConvTranspose/Gemm (a
MatMul and its bias Add once MatMulAddFusion made them one) that reads a
per-tensor DequantizeLinear and leads (through a Relu/Clip) to a
QuantizeLinear, after its QDQPropagation moved those past a MaxPool, Reshape,
Transpose, Squeeze, Unsqueeze or Slice, or its PadFusion folded a Pad of zeros
into the Conv: a float bias becomes int32 codes at s_in * s_w, saturating
where the product is tiny (float8 e5m2 scales) - such a bias is written as
int32 codes at a scale wide enough to hold it instead -, and a float weight
becomes int8 per tensor, which qtool cannot prevent and reports.
"""

from __future__ import annotations

import numpy as np
from qtool.ops import bias_input, folds_into_gemm, is_bias
from qtool.quant import QuantizationPolicy as P

from .configs import input_config, output_config
from .storage import storage_type

INT32_MAX = 2**31 - 1
_RTOL = 1e-6
PROPAGATES_DEQUANTIZE = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")  # QDQPropagation
MAX_PROPAGATION = 16


def misread_reason(op, tqc) -> str | None:
    """Why ORT would misread ``op``'s quantized bias written as int32 codes (None: it reads it right).

    Needs settled parameters; call it on calibrated graphs only.
    """
    stype = storage_type(tqc.scheme, stored=True)
    if stype is None or stype.name != "int32":
        return f"it is {tqc.scheme.short()}, not int32"
    x, w = input_config(op, 0, True), input_config(op, 1, True)
    if x is None or w is None or x.scheme.is_per_channel:
        return "its op's input or weight is not quantized per tensor / per channel, so there is no s_in * s_w"
    if np.any(np.asarray(tqc.offset) != 0):
        return "its zero point is not 0"
    expected = np.asarray(x.scale, np.float64) * np.asarray(w.scale, np.float64)
    scale = np.asarray(tqc.scale, np.float64)
    try:
        matches = np.allclose(scale, expected, rtol=_RTOL, atol=0.0)
    except ValueError:  # shapes that do not broadcast
        matches = False
    return None if matches else "its scale is not s_in * s_w"


def saturating_float_bias_scale(op, index: int) -> np.ndarray | None:
    """For a float bias whose codes at s_in * s_w overflow int32: per-element scales that hold it (else None)."""
    var = op.inputs[index] if is_bias(op, index) and index < len(op.inputs) else None
    x, w = input_config(op, 0, True), input_config(op, 1, True)
    if var is None or not var.is_parameter or x is None or w is None or x.scheme.is_per_channel:
        return None
    bias = np.abs(np.asarray(var.value, np.float64))
    if np.asarray(w.scale).size not in (1, bias.size) or w.scheme.policy & P.PER_BLOCK:
        return None  # ORT leaves such biases float
    product = np.broadcast_to(np.asarray(x.scale, np.float64) * np.asarray(w.scale, np.float64).reshape(-1),
                              bias.shape)
    if np.all(bias <= INT32_MAX * product):
        return None
    return np.maximum(product, bias / INT32_MAX).astype(np.float32)


def weight_requantized(graph, op, activation, settled: bool) -> bool:
    """True when ORT quantizes ``op``'s float weight to int8 itself (WeightBiasQuantization; a MatMul with the
    bias Add its MatMulAddFusion folds into a Gemm first)."""
    folded = folds_into_gemm(op)
    if bias_input(op) is None and not folded or len(op.inputs) < 2 or not op.inputs[1].is_parameter:
        return False
    x = _arriving_config(op, settled)
    if x is None or x.scheme.is_per_channel or input_config(op, 1, settled) is not None:
        return False
    last = op.outputs[0].consumers[0] if folded else op
    return activation is not None or _leaving_config(graph, last, settled) is not None


def _arriving_config(op, settled: bool):
    """The DequantizeLinear ``op``'s input 0 reads once ORT's QDQ propagation has run: its own or its producer's,
    or one further up that ORT moves past data-movement ops (a float Conv after a MaxPool of a quantized tensor)."""
    node = op
    for _ in range(MAX_PROPAGATION):
        found = input_config(node, 0, settled)
        source = node.inputs[0] if node.inputs else None
        producer = source.producer if source is not None else None
        if found is not None or producer is None or not (producer.op_type in PROPAGATES_DEQUANTIZE
                                                         or node is op and _folded_pad(producer)):
            return found
        node = producer
    return None


def _folded_pad(op) -> bool:
    """A Pad of zeros, which ORT's PadFusion folds into the Conv that reads it."""
    if op.op_type != "Pad" or op.attributes.get("mode", "constant") not in ("constant", b"constant"):
        return False
    value = op.inputs[2] if len(op.inputs) > 2 else None
    return value is None or value.is_parameter and not np.any(value.value)


def _leaving_config(graph, op, settled: bool):
    """The QuantizeLinear ``op``'s output leads to once ORT has run: right after it, or after the ops that alone
    read it one after the other, a Relu or Clip it drops before a QuantizeLinear and data-movement ops its
    QDQPropagation moves the QuantizeLinear past."""
    node = op
    for _ in range(MAX_PROPAGATION):
        found = output_config(graph, node, 0, settled)
        var = node.outputs[0]
        if found is not None or var in graph.outputs or len(var.consumers) != 1 \
                or var.consumers[0].op_type not in ("Relu", "Clip", *PROPAGATES_DEQUANTIZE):
            return found
        node = var.consumers[0]
    return None
