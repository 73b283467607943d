"""What an encodings file can carry, as diagnostics naming the op and tensor."""

from __future__ import annotations

from collections import defaultdict

import qtool
from qtool import Diagnostic, Severity
from qtool.ops import foreign_ops, reads_shape_only, weight_axis
from qtool.quant import reader_config, written_config

BITS = (4, 8, 16, 32)


def scheme_problem(entry: qtool.QuantizedTensor) -> str | None:
    """Why this tensor's scheme has no AIMET integer encoding (None: it has one)."""
    scheme, flags = entry.scheme, qtool.QuantizationPolicy
    if scheme.is_floating:
        return "AIMET encodings are integer; a float format has none"
    if scheme.policy & flags.PER_BLOCK:
        return "per-block encodings are not written by this plugin"
    if scheme.policy & flags.DYNAMIC:
        return "encodings are static; dynamic scales cannot be written"
    if scheme.num_of_bits not in BITS:
        return f"{scheme.num_of_bits}-bit codes: AIMET/QNN take {', '.join(map(str, BITS))} bits"
    if scheme.is_per_channel and entry.role == "activation":
        return "AIMET activation encodings are per tensor"
    axis = weight_axis(entry.op, entry.tensor) if entry.role == "weight" else None
    if scheme.is_per_channel and axis is not None and scheme.channel_axis != axis:
        return (f"per-channel on axis {scheme.channel_axis}, but encodings are listed along the output channels "
                f"(axis {axis})")
    return None


def float_readers(graph) -> list[Diagnostic]:
    """Warnings for activations that some readers quantize and others read float in qtool's simulation.

    An encoding belongs to the tensor, so on the target every reader sees it quantized; a reader of its shape
    alone (Shape, Size) is not affected.
    """
    found = []
    names = dict.fromkeys(t.tensor for t in qtool.quantized_tensors(graph, roles=["activation"], settled=False))
    for var in (graph.variables[name] for name in names):
        if written_config(var, settled=False) is not None:
            continue
        reads = [(op.name, reader_config(op, i, settled=False) is not None) for op in dict.fromkeys(var.consumers)
                 for i, source in enumerate(op.inputs) if source is var and not reads_shape_only(op, i)]
        floats = [name for name, quantizes in reads if not quantizes]
        quantized = [name for name, quantizes in reads if quantizes]
        if floats and quantized:
            found.append(Diagnostic(
                Severity.WARNING, "aimet.float-readers",
                f"one encoding per tensor: the target quantizes it for every reader, but qtool's simulation reads "
                f"it float at {', '.join(floats)} (quantized at {', '.join(quantized)}), so their numbers differ",
                op=floats[0], tensor=var.name))
    return found


def check(graph) -> list[Diagnostic]:
    """Errors for schemes without an encoding and for tensors with two; warnings for narrow code ranges and for
    tensors read float by some readers."""
    found, encodings = [], defaultdict(list)
    for entry in qtool.quantized_tensors(graph, settled=False):
        problem = scheme_problem(entry)
        if problem:
            found.append(Diagnostic(Severity.ERROR, "aimet.scheme", problem, op=entry.op.name, tensor=entry.tensor,
                                    scheme=entry.scheme.short()))
            continue
        span = entry.scheme.quant_max - entry.scheme.quant_min + 1
        if span != 2**entry.scheme.num_of_bits:
            found.append(Diagnostic(
                Severity.WARNING, "aimet.narrow-range",
                f"codes {int(entry.scheme.quant_min)}..{int(entry.scheme.quant_max)} use {int(span)} of "
                f"{2**entry.scheme.num_of_bits} values; the encoding is written on the full grid that holds them "
                f"(same scale, same values), so the target may produce the {2**entry.scheme.num_of_bits - span} "
                f"other code(s), which qtool's simulation clamps",
                op=entry.op.name, tensor=entry.tensor, scheme=entry.scheme.short()))
        if entry.settled:
            encodings[entry.tensor].append(entry)
    for tensor, entries in encodings.items():
        values = {(e.scale.tobytes(), e.offset.tobytes(), e.scheme.num_of_bits) for e in entries}
        if len(values) > 1:
            ops = ", ".join(e.op.name for e in entries)
            found.append(Diagnostic(Severity.ERROR, "aimet.conflict",
                                    f"one encoding per tensor, but qtool quantizes it differently at {ops}; "
                                    "the export writes the first", op=entries[1].op.name, tensor=tensor))
    return found + float_readers(graph) + foreign(graph)


def foreign(graph) -> list[Diagnostic]:
    """One warning per op type from outside ONNX's own domain: QNN's ONNX converter reads ai.onnx ops, others only
    through an op package of the user's."""
    return [Diagnostic(Severity.WARNING, "aimet.foreign-op",
                       f"{len(names)} op(s) {domain}::{op_type} are written as they are: QNN's ONNX converter reads "
                       "ai.onnx ops, and another only through an op package of yours; the conversion may refuse the "
                       "model (export it without such ops, e.g. before ONNX Runtime's transformer optimizer)",
                       op=names[0])
            for (domain, op_type), names in foreign_ops(graph).items()]
