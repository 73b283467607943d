"""Quantization coverage: how many compute ops (Conv, ConvTranspose, Gemm, MatMul) run quantized, and why not.

A model whose compute stays float is not quantized, whatever else is: when
fewer than half of its compute ops are quantized, :func:`low_coverage` gives
a WARNING diagnostic naming the biggest reasons. A model that arrives quantized
already is no float model: its own quantized ops count, and :func:`prequantized`
says what it holds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .ops import COMPUTE_OP_TYPES, is_compute
from .platform import Diagnostic, Severity

MODEL_QUANTIZED = "quantized in the model: its own quantization (Q/DQ nodes, integer ops) stays as it is"
LOW_SHARE = 0.5
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_COMPUTE_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
                                 "MatMulIntegerToFloat", "MatMulNBits"})  # compute ops a model holds in integers
INTEGER_OPS = INTEGER_COMPUTE_OPS | {"DynamicQuantizeLinear"}
HELD_QUANTIZATION = QDQ_OPS | INTEGER_OPS  # what a model that arrives quantized holds
SHOWN_REASONS = 3
SHOWN_TYPES = 8
_DETAILS = re.compile(r"\s*\([^()]*\d[^()]*\)")  # "(SNR 44.2 dB, ...)": per-op numbers


@dataclass(frozen=True)
class Coverage:
    """``compute_ops`` in the graph, ``compute_ops_quantized`` of them, and the float ones' reasons by count."""

    compute_ops: int
    compute_ops_quantized: int
    float_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        return self.compute_ops_quantized / self.compute_ops if self.compute_ops else None

    @property
    def low(self) -> bool:
        return self.compute_ops > 0 and self.compute_ops_quantized < LOW_SHARE * self.compute_ops

    def as_dict(self) -> dict:
        return {"compute_ops": self.compute_ops, "compute_ops_quantized": self.compute_ops_quantized,
                "float_reasons": dict(self.float_reasons)}


def coverage(graph) -> Coverage:
    """The coverage of a dispatched graph (an op counts as quantized when ``op.quant.quantized``, or when the model
    quantizes it itself: :data:`MODEL_QUANTIZED`, an integer compute op of the model's among them)."""
    ops = [op for op in graph.operations.values() if is_compute(op) or op.op_type in INTEGER_COMPUTE_OPS]
    quantized = [op for op in ops if op.quant is not None and (op.quant.quantized
                                                               or op.quant.reason == MODEL_QUANTIZED)]
    reasons = Counter(_general(op.quant.reason if op.quant is not None else "not dispatched")
                      for op in ops if op not in quantized)
    return Coverage(len(ops), len(quantized), dict(reasons.most_common()))


def low_coverage(found: Coverage) -> list[Diagnostic]:
    """A WARNING when fewer than half of the compute ops are quantized (none otherwise)."""
    if not found.low:
        return []
    reasons = "; ".join(f"{count} x {reason}" for reason, count in list(found.float_reasons.items())[:SHOWN_REASONS])
    types = "/".join(sorted(COMPUTE_OP_TYPES))
    return [Diagnostic(Severity.WARNING, "coverage.low",
                       f"only {found.compute_ops_quantized} of {found.compute_ops} compute ops ({types}) are "
                       f"quantized; the rest run in float. Biggest reasons: {reasons}")]


def nothing_quantized(graph) -> list[Diagnostic]:
    """A WARNING when the model has no compute op and no op of it is quantized, by qtool or by the model itself
    (nor holds a body that may be): the written model is the float one (:func:`low_coverage` speaks where there are
    compute ops, :func:`prequantized` where the model holds quantization)."""
    ops = list(graph.operations.values())
    if any(is_compute(op) or op.has_subgraphs or op.op_type in HELD_QUANTIZATION
           or op.quant is not None and op.quant.quantized for op in ops):
        return []
    types = "/".join(sorted(COMPUTE_OP_TYPES))
    kinds = ", ".join(sorted({op.op_type for op in ops})[:SHOWN_TYPES])
    if not ops:  # outputs that are inputs or constants: no configuration would change that
        return [Diagnostic(Severity.WARNING, "coverage.none",
                           "nothing is quantized: the model has no op (its outputs are its inputs or constants), so "
                           "it has nothing to quantize; the written model computes as the input model does")]
    if not _holds_float(graph):  # strings, integers: no configuration would change that
        return [Diagnostic(Severity.WARNING, "coverage.none",
                           f"nothing is quantized: the model ({kinds}) computes on no floating-point tensor, so it "
                           "has nothing to quantize; the written model computes as the input model does")]
    return [Diagnostic(Severity.WARNING, "coverage.none",
                       f"nothing is quantized: the model has no compute op ({types}) and none of its op types "
                       f"({kinds}) is one the configuration quantizes; the written model computes in float "
                       "(dispatch.quantize_op_types or dispatch.include name more)")]


def _holds_float(graph) -> bool:
    """Some tensor of ``graph`` is floating-point, or of a type qtool does not know (then it may be)."""
    return any(var.dtype is None or np.dtype(var.dtype).kind == "f" or "float" in str(var.dtype)
               for var in graph.variables.values())


def _general(reason: str) -> str:
    """A reason without its per-op numbers in parentheses, so that equal causes group."""
    return _DETAILS.sub("", reason)


def initializers_as_inputs(graph) -> list[Diagnostic]:
    """A WARNING when initializers of the model are also graph inputs (IR 4 and later: defaults a caller may feed;
    exporters' keep_initializers_as_inputs lists every one): qtool takes them as the constants they hold, and the
    written model no longer takes them as inputs."""
    listed = graph.info.constant_inputs
    if not listed:
        return []
    names = ", ".join(repr(name) for name in listed[:3]) + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")
    return [Diagnostic(Severity.WARNING, "model.initializers-as-inputs",
                       f"{len(listed)} initializer(s) of the model are also graph inputs ({names}), which a caller "
                       "may feed in place of the value they hold: qtool quantized them as the constants they hold "
                       "(exporters list every weight so with keep_initializers_as_inputs), and the written model "
                       "takes only the other inputs: feeding one now fails")]


def prequantized(graph) -> list[Diagnostic]:
    """A WARNING when the model arrived quantized: the Q/DQ nodes qtool removed to quantize it again
    (:mod:`qtool.own_quantization`) and the quantization of its own it keeps (integer ops, the Q/DQ around them);
    none otherwise."""
    removed = graph.info.removed_quantization
    found = Counter(op.op_type for op in graph.operations.values() if op.op_type in HELD_QUANTIZATION)
    if not removed and not found:
        return []
    said = []
    if removed:
        said.append(f"the model arrived quantized ({_listed(removed)}): qtool removed those Q/DQ nodes and "
                    "quantized the float model they leave with this configuration and calibration data, its "
                    "weights as the model dequantized them (rounded once already); 'float' in this run's "
                    "measures is that model, not the float model it was made from")
    if found:
        said.append(f"the model is quantized already ({_listed(found)}): qtool keeps that quantization and "
                    "quantizes the float tensors around it, once; to choose every scale, quantize the float model")
    return [Diagnostic(Severity.WARNING, "model.prequantized", "; ".join(said))]


def _listed(counts) -> str:
    return ", ".join(f"{count} {op_type}" for op_type, count in sorted(counts.items()))
