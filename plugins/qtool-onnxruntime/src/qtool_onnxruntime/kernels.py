"""What ONNX Runtime (CPU) does with a quantized Conv / Gemm / MatMul: integer kernel, float kernel, or failure.

ORT rewrites DequantizeLinear -> op -> QuantizeLinear into QLinearConv, QGemm,
QLinearMatMul or MatMulIntegerToFloat when the node group has the right shape
(every input from a DequantizeLinear, the output only into QuantizeLinear -
Gemm and MatMul may also write float -, no Relu/Clip left in between that the
QuantizeLinear does not make redundant) and its type checks pass: no 16-bit
type, no 4-bit weight (4-bit inputs also stop Gemm and MatMul), no float8,
input and output of one type, int8 inputs only with int8 weights, float32
values (a float16 or bfloat16 model is written in float32, see .half). Its x86
kernels take uint8 activations; int8 pairs are converted when they have a
single reader. Those checks let 2-bit types (and 4-bit Conv inputs) through,
and the integer kernel then refuses them: the session fails to load. This
plugin's truth test holds every rule here against a real ORT session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper
from qtool.ops import bias_input, has_bias, quantized_in_model, weight_axis
from qtool.quant import QuantizationPolicy as P

from .activations import FusedActivation, clips_exactly, relu_pair_moves
from .bias import weight_requantized
from .configs import input_config, output_config, pair_uses, reader_groups
from .storage import EIGHT_BIT, codes_type, storage_type

KERNELS = {"Conv": "QLinearConv", "Gemm": "QGemm", "MatMul": "QLinearMatMul"}


@dataclass(frozen=True)
class Blocker:
    """One reason: a stable code, the tensor concerned and a sentence."""

    code: str
    tensor: str | None
    reason: str


@dataclass
class Verdict:
    """``errors``: ORT fuses and then fails; ``blockers``: ORT keeps the op in float. Both empty: integer kernel."""

    errors: list[Blocker] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)


def kernel_verdict(graph, op, activation: FusedActivation | None, removed: bool, settled: bool,
                   opset: int) -> Verdict:
    """How ORT runs ``op`` at ``opset``; ``activation`` is the Relu/Clip fused after it, ``removed`` whether
    export drops it."""
    if op.op_type == "ConvTranspose":
        return Verdict(blockers=[Blocker("ort.perf.op-type", None, "ONNX Runtime has no integer ConvTranspose "
                                         "kernel on CPU")])
    verdict = Verdict()
    if op.op_type == "Gemm" and has_bias(op) and (op.attributes.get("alpha", 1.0) != 1.0
                                                  or op.attributes.get("beta", 1.0) != 1.0):
        verdict.blockers.append(Blocker("ort.perf.gemm-scale", None, "ONNX Runtime fuses a Gemm with a bias into "
                                        "QGemm only with alpha and beta 1 (qtool folds them into B and C where both "
                                        "are constants; this Gemm's B or C is computed)"))
    _computed_bias(op, settled, verdict)
    kinds = {0: _input(graph, op, 0, settled, verdict)}
    if weight_requantized(graph, op, activation, settled):
        kinds[1] = "int8"  # ORT quantizes the float weight itself
    else:
        kinds[1] = _input(graph, op, 1, settled, verdict)
    moved = activation is not None and relu_pair_moves(activation.op, activation.config)
    out_var, out_tqc = _output(graph, op, activation, removed or moved, settled, verdict)
    if out_tqc is not None:
        kinds["output"] = _kind(graph, out_var, out_tqc, settled, verdict)
    if verdict.blockers or None in kinds.values():
        return verdict
    _types(op, kinds, {0: op.inputs[0].name, 1: op.inputs[1].name, "output": getattr(out_var, "name", None)}, verdict)
    if not verdict.blockers and not verdict.errors:
        _conv_weight_axis(op, settled, verdict)
    return verdict


def _codes_dtype(dequantize) -> np.dtype | None:
    """The type of the codes a model's own DequantizeLinear reads: as the model states it, else its zero point's,
    else the QuantizeLinear writing them (its zero point's type, its output_dtype, else uint8, the default)."""
    codes = dequantize.inputs[0]
    if codes is None or codes.dtype is not None:
        return None if codes is None else codes.dtype
    quantize = codes.producer if codes.producer is not None and codes.producer.op_type == "QuantizeLinear" else None
    for source in (dequantize, quantize):
        zero_point = source.inputs[2] if source is not None and len(source.inputs) > 2 else None
        if zero_point is not None and zero_point.dtype is not None:
            return zero_point.dtype
    if quantize is None:
        return None
    to = quantize.attributes.get("output_dtype")
    return helper.tensor_dtype_to_np_dtype(to) if to else np.dtype(np.uint8)


def _input(graph, op, index: int, settled: bool, verdict: Verdict) -> str | None:
    var = op.inputs[index]
    tqc = input_config(op, index, settled)
    what = "weight" if var.is_parameter else "input"
    if tqc is None and quantized_in_model(var):  # the model's own DequantizeLinear writes it
        kind = codes_type(_codes_dtype(var.producer))
        if kind is None:
            verdict.blockers.append(Blocker("ort.perf.type", var.name, f"{what} {var.name!r} comes from the "
                                            "model's own DequantizeLinear, of codes of a type qtool does not know"))
        return kind
    if tqc is None:
        verdict.blockers.append(Blocker("ort.perf.float-input", var.name, f"{what} {var.name!r} is not quantized"))
        return None
    scheme = tqc.scheme
    if scheme.policy & P.PER_BLOCK and var.is_parameter and op.op_type == "Conv" and not has_bias(op):
        verdict.errors.append(Blocker("ort.conv-weight-block", var.name, "ORT fuses a Conv without bias into "
                                      "QLinearConv, which takes weight scales per tensor or per output channel only: "
                                      "with a per-block weight it fails at run time; quantize the weight per channel "
                                      "on axis 0"))
    if scheme.policy & P.PER_BLOCK or scheme.is_per_channel and not var.is_parameter:
        verdict.blockers.append(Blocker("ort.perf.granularity", var.name, f"{what} {var.name!r} is quantized "
                                        f"{'per block' if scheme.policy & P.PER_BLOCK else 'per channel'}, and ORT's "
                                        "integer kernels take per-tensor inputs and per-tensor or per-channel weights"))
    if op.op_type == "MatMul" and var.is_parameter and var.value.ndim > 2 and scheme.policy & P.PER_CHANNEL:
        verdict.blockers.append(Blocker("ort.perf.granularity", var.name, f"weight {var.name!r} has "
                                        f"{var.value.ndim} dimensions and is quantized per channel: ORT's integer "
                                        "MatMul takes per-channel scales on a 2-D weight only (per-tensor: integer)"))
    axis = weight_axis(op, var.name)
    if var.is_parameter and scheme.policy & P.PER_CHANNEL and scheme.channel_axis != axis and \
            (op.op_type != "Conv" or has_bias(op)):
        verdict.blockers.append(Blocker("ort.perf.granularity", var.name, f"weight {var.name!r} is per-channel on "
                                        f"axis {scheme.channel_axis}, not on its output axis {axis}"))
    return _kind(graph, var, tqc, settled, verdict)


def _output(graph, op, activation, removed: bool, settled: bool, verdict: Verdict):
    """The tensor and config of the QuantizeLinear that ends the node group (None, None: float output)."""
    out = op.outputs[0]
    if activation is not None:
        if not removed and not clips_exactly(activation, _type_limits(activation.config)):
            verdict.blockers.append(Blocker("ort.perf.activation", out.name, f"{activation.op.op_type} "
                                            f"{activation.op.name!r} stays between {op.op_type} and its "
                                            "QuantizeLinear, and ORT drops it only where the output grid already "
                                            "clips at its bounds (e.g. a Relu output whose zero point is the type's "
                                            "minimum)"))
        return activation.op.outputs[0], activation.config
    tqc = output_config(graph, op, 0, settled)
    if tqc is not None:
        return out, tqc
    if reader_groups(out, settled):
        what = "goes both to a QuantizeLinear and elsewhere"
    elif op.op_type == "Gemm" and _float_bias(op, settled):
        what = "is float and its bias is float"
        verdict.blockers.append(Blocker("ort.perf.float-output", out.name, f"output {out.name!r} {what}, and ORT "
                                        "fuses a Gemm with float output into QGemm only when its bias is int32"))
        return None, None
    elif op.op_type == "MatMul" and op.inputs[0].is_parameter:
        verdict.blockers.append(Blocker("ort.perf.float-output", out.name, f"output {out.name!r} is float and the "
                                        "MatMul's first input is a weight (W @ x): ORT writes a float MatMul output "
                                        "only through MatMulIntegerToFloat, which takes the weight second"))
        return None, None
    elif op.op_type != "Conv":
        return None, None  # QGemm (int32 bias) / MatMulIntegerToFloat write float
    else:
        what = "is not quantized right after it"
    verdict.blockers.append(Blocker("ort.perf.float-output", out.name, f"output {out.name!r} {what}, and "
                                    f"{KERNELS[op.op_type]} needs its output to go only into a QuantizeLinear"))
    return None, None


def _computed_bias(op, settled: bool, verdict: Verdict) -> None:
    """A computed bias quantized as an activation is read through its own uint8/int8 DequantizeLinear, and ORT's
    selectors fuse a bias only from int32 codes (onnx's pytorch-operator/test_operator_addmm ran two float Gemms
    that validation called QGemm)."""
    index = bias_input(op)
    tqc = input_config(op, index, settled) if has_bias(op) and not op.inputs[index].is_parameter else None
    stype = None if tqc is None else storage_type(tqc.scheme, stored=False)
    if tqc is not None and getattr(stype, "name", None) != "int32":
        name = op.inputs[index].name
        verdict.blockers.append(Blocker("ort.perf.bias", name, f"bias {name!r} is computed and quantized as "
                                        f"{tqc.scheme.short()}, and ORT fuses {KERNELS[op.op_type]} only with an "
                                        "int32 bias"))


def _float_bias(op, settled: bool) -> bool:
    """Whether ``op`` has a bias that the export writes as float (no int32 bias config)."""
    return has_bias(op) and input_config(op, bias_input(op), settled) is None


def _kind(graph, var, tqc, settled: bool, verdict: Verdict) -> str | None:
    """The storage type ORT sees after turning single-reader int8 activation pairs into uint8."""
    stype = storage_type(tqc.scheme, stored=var.is_parameter)
    if stype is None:
        return None  # reported as ort.no-qdq-type
    if stype.name != "int8" or var.is_parameter:
        return stype.name
    uses = pair_uses(graph, var, tqc, settled)
    if uses == 1:
        return "uint8"
    verdict.blockers.append(Blocker("ort.perf.int8-shared", var.name, f"int8 activation {var.name!r} is read {uses} "
                                    "times from one QuantizeLinear/DequantizeLinear pair, and ORT converts int8 pairs "
                                    "to the uint8 its x86 integer kernels need only when the pair has a single reader "
                                    "(uint8 activations avoid this)"))
    return stype.name


def _types(op, kinds: dict, tensors: dict, verdict: Verdict) -> None:
    """Type blockers, each naming the tensor of the first type concerned (``tensors``: by the keys of ``kinds``;
    an int4 weight's note named the op's input)."""
    inp, weight, out = kinds[0], kinds[1], kinds.get("output")
    found = [(k, key) for key, k in kinds.items() if k.endswith("16") or k.startswith("float8")]
    if weight.endswith("4") or op.op_type != "Conv" and inp.endswith("4"):
        found.append((weight, 1) if weight.endswith("4") else (inp, 0))
    if out is not None and out != inp and not {inp, out} <= EIGHT_BIT:  # int8 in, uint8 out (or the reverse) fuses
        found.append((f"{inp} input with {out} output", "output"))
    if found:
        verdict.blockers.append(Blocker("ort.perf.type", tensors[found[0][1]],
                                        f"{', '.join(dict.fromkeys(k for k, _ in found))}: "
                                        "ORT's CPU integer kernels take 8-bit inputs, weights and outputs"))
    elif any(k not in EIGHT_BIT for k in kinds.values()):
        odd = ", ".join(sorted({k for k in kinds.values() if k not in EIGHT_BIT}))
        first = next(key for key, k in kinds.items() if k not in EIGHT_BIT)
        verdict.errors.append(Blocker("ort.kernel-type", tensors[first], f"ORT's type checks let {odd} through "
                                      f"and fuse the {op.op_type} into {KERNELS[op.op_type]}, which takes 8-bit types "
                                      "only: the session fails to load"))


def _conv_weight_axis(op, settled: bool, verdict: Verdict) -> None:
    tqc = input_config(op, 1, settled)
    if op.op_type == "Conv" and tqc is not None and tqc.scheme.policy & P.PER_CHANNEL and tqc.scheme.channel_axis != 0:
        verdict.errors.append(Blocker("ort.conv-weight-axis", op.inputs[1].name, "ORT fuses this Conv into "
                                      "QLinearConv, which takes weight scales per output channel (axis 0) only: with "
                                      f"per-channel axis {tqc.scheme.channel_axis} it fails at run time; quantize the "
                                      "weight on axis 0"))


def _type_limits(tqc) -> tuple[float, float] | None:
    stype = storage_type(tqc.scheme)
    return stype.limits if stype is not None else None
