"""Whether ONNX Runtime (CPU) fuses a quantized Conv / Gemm / MatMul into an integer kernel.

ORT rewrites DequantizeLinear -> op -> QuantizeLinear into QLinearConv, QGemm,
QLinearMatMul or MatMulIntegerToFloat when (checked by this plugin's truth
test): the data inputs are int8/uint8 per-tensor, the weight int8/uint8
per-tensor or per-channel on its output axis, and - for Conv and Gemm - the
output goes straight into an int8/uint8 per-tensor QuantizeLinear (Gemm and
MatMul may also write float), with no Relu/Clip left in between. ConvTranspose
has no integer kernel on CPU. Anything else runs through DequantizeLinear ->
float op -> QuantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtool.config.axes import natural_weight_axis
from qtool.quant import QuantizationPolicy as P

from .activations import FusedActivation, clips_exactly
from .configs import input_config, output_config, pair_uses
from .storage import EIGHT_BIT, storage_type

KERNELS = {"Conv": "QLinearConv", "Gemm": "QGemm", "MatMul": "QLinearMatMul / MatMulIntegerToFloat"}


@dataclass(frozen=True)
class Blocker:
    """One reason the op stays float: a stable code, the tensor concerned and a sentence."""

    code: str
    tensor: str | None
    reason: str


def kernel_blockers(graph, op, activation: FusedActivation | None, removed: bool, settled: bool) -> list[Blocker]:
    """Why ORT keeps ``op`` in float (empty: it runs an integer kernel).

    ``activation`` is the Relu/Clip fused after ``op`` (or None); ``removed``
    says whether the export drops it.
    """
    if op.op_type == "ConvTranspose":
        return [Blocker("ort.perf.op-type", None, "ONNX Runtime has no integer ConvTranspose kernel on CPU")]
    blockers = [b for index in (0, 1) if (b := _input_blocker(graph, op, index, settled)) is not None]
    return blockers + _output_blockers(graph, op, activation, removed, settled)


def _input_blocker(graph, op, index: int, settled: bool) -> Blocker | None:
    var = op.inputs[index]
    tqc = input_config(op, index, settled)
    what = "weight" if var.is_parameter else "input"
    if tqc is None:
        return Blocker("ort.perf.float-input", var.name, f"{what} {var.name!r} is not quantized")
    scheme = tqc.scheme
    stype = storage_type(scheme, stored=var.is_parameter)
    if stype is None or stype.name not in EIGHT_BIT:
        return Blocker("ort.perf.type", var.name, f"{what} {var.name!r} is {scheme.short()}, "
                       "and ORT's integer kernels take int8/uint8 only")
    if scheme.policy & P.PER_BLOCK or scheme.is_per_channel and not var.is_parameter:
        return Blocker("ort.perf.granularity", var.name, f"{what} {var.name!r} is quantized "
                       f"{'per block' if scheme.policy & P.PER_BLOCK else 'per channel'}, "
                       "and ORT's integer kernels take per-tensor activations and per-tensor or per-channel weights")
    axis = natural_weight_axis(op, var.name)
    if scheme.is_per_channel and op.op_type != "Conv" and scheme.channel_axis != axis:
        return Blocker("ort.perf.granularity", var.name, f"weight {var.name!r} is per-channel on axis "
                       f"{scheme.channel_axis}, not on its output axis {axis}")
    return None if var.is_parameter else _shared_int8(graph, var, tqc, stype, settled)


def _shared_int8(graph, var, tqc, stype, settled: bool) -> Blocker | None:
    """ORT's x86 integer kernels take uint8 activations; it turns an int8 Q/DQ pair into uint8 only when
    the pair's DequantizeLinear has a single reader."""
    uses = pair_uses(graph, var, tqc, settled)
    if stype.name != "int8" or uses == 1:
        return None
    return Blocker("ort.perf.int8-shared", var.name, f"int8 activation {var.name!r} is read {uses} times from one "
                   "QuantizeLinear/DequantizeLinear pair, and ORT converts int8 pairs to the uint8 its x86 integer "
                   "kernels need only when the pair has a single reader (uint8 activations avoid this)")


def _output_blockers(graph, op, activation: FusedActivation | None, removed: bool, settled: bool) -> list[Blocker]:
    out = op.outputs[0]
    if activation is not None:
        if not removed and not clips_exactly(activation, _type_limits(activation.config)):
            return [Blocker("ort.perf.activation", out.name, f"{activation.op.op_type} {activation.op.name!r} stays "
                            f"between {op.op_type} and its QuantizeLinear (ORT drops it only where the output grid "
                            "already clips at its bounds, e.g. a Relu output's zero point is the type's minimum)")]
        tqc = activation.config
    else:
        tqc = output_config(graph, op, 0, settled)
    if op.op_type == "MatMul" or tqc is None and op.op_type == "Gemm":
        return []  # MatMulIntegerToFloat / QGemm write float
    if tqc is None:
        return [Blocker("ort.perf.float-output", out.name, f"output {out.name!r} is not quantized right after the "
                        "Conv, and QLinearConv needs a QuantizeLinear there")]
    stype = storage_type(tqc.scheme)
    if stype is None or stype.name not in EIGHT_BIT or tqc.scheme.is_per_channel:
        return [Blocker("ort.perf.type", out.name, f"output {out.name!r} is {tqc.scheme.short()}, and ORT's "
                        "integer kernels write int8/uint8 per-tensor only")]
    quantized = activation.op.outputs[0] if activation is not None else out
    shared = _shared_int8(graph, quantized, tqc, stype, settled)
    return [shared] if shared is not None else []


def _type_limits(tqc) -> tuple[float, float] | None:
    stype = storage_type(tqc.scheme)
    return stype.limits if stype is not None else None
