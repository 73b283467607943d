"""Quantizing inside If, Loop and Scan bodies.

The control-flow op itself runs float (through ONNX Runtime, in qtool's
executor as in the export); each body is quantized as a model of its own
(its formal inputs and the outer tensors it reads as inputs, the main graph's
parameters it reads as its initializers) by the same pipeline and platform,
calibrated on the feeds it saw while the main graph ran over the calibration
data (:mod:`.feeds`: the branch an If took, every Loop iteration and Scan
step), validated, exported and checked against ONNX Runtime on its own. The
exported body, Q/DQ inside, replaces the op's attribute: outer tensors are
quantized inside the body that reads them; the graph's ``float_reference`` keeps
the float bodies, which the quantized model is measured against. A body never run during calibration,
or whose quantization fails, stays float, and the op's reason (``qtool
explain``, the summary's ``subgraphs``) says so; a body that reads no tensor
(constants alone) has nothing to quantize.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from ..coverage import INTEGER_COMPUTE_OPS, Coverage
from ..errors import QtoolError
from ..ir import Graph, Operation
from ..ir.onnx_import import outer_references, subgraphs
from ..ops import COMPUTE_OP_TYPES
from ..platform import Diagnostic, Severity
from .feeds import body_attributes, body_model, record_bodies
from .splice import exported_body

NEVER_RUN = "never run during calibration: kept float"


class BodyStaysFloat(QtoolError):
    """The platform cannot carry a body's quantization (its files beside the model, or no ONNX model): checked
    before the body's work, said as the reason, not as a failure."""

CONSTANTS_ALONE = "reads no tensor (constants alone): nothing to quantize"
_SAID = (NEVER_RUN, CONSTANTS_ALONE)  # reasons the op's own says, without a warning


@dataclass
class BodyOutcome:
    """One body of one control-flow op: its compute ops (its own bodies' included), how many were quantized, the
    float ones' reasons by count, and why the body stayed float where it did."""

    op: str
    attribute: str
    compute_ops: int = 0
    quantized: int = 0
    reason: str | None = None
    agreement: dict | None = None
    calls: int = 0  # the body's calls it was calibrated on
    float_reasons: dict[str, int] = field(default_factory=dict)

    def kept_float(self, body: onnx.GraphProto, reason: str) -> None:
        """The body stays float for ``reason``: each of its compute ops counts as float for it."""
        self.reason, self.compute_ops, self.quantized = reason, _compute_nodes(body), 0
        self.float_reasons = {reason: self.compute_ops} if self.compute_ops else {}

    def text(self) -> str:
        if self.reason is not None:
            return f"{self.attribute} {self.reason}"
        plural = "" if self.calls == 1 else "s"
        return (f"{self.attribute} {self.quantized}/{self.compute_ops} compute ops quantized, calibrated on "
                f"{self.calls} call{plural}")


@dataclass
class Bodies:
    """What :func:`quantize_bodies` did, by op."""

    outcomes: list[BodyOutcome] = field(default_factory=list)

    def explain(self, graph: Graph) -> list[Diagnostic]:
        """Write each op's bodies into its float reason (after dispatch); a WARNING for each body kept float."""
        found = []
        for name in dict.fromkeys(o.op for o in self.outcomes):
            op = graph.operations[name]
            mine = [o for o in self.outcomes if o.op == name]
            if op.quant is not None and not op.quant.quantized:
                op.quant.reason = ("control flow: runs float through ONNX Runtime; inside: "
                                   + "; ".join(o.text() for o in mine))
            found += [Diagnostic(Severity.WARNING, "control-flow.body-float", f"{o.attribute}: {o.reason}", op=name)
                      for o in mine if o.reason is not None and o.reason not in _SAID]
        return found

    def as_list(self) -> list[dict]:
        return [vars(o).copy() for o in self.outcomes]

    def coverage(self, main: Coverage) -> Coverage:
        """``main`` (the main graph's coverage) with the compute ops of every body added."""
        reasons = Counter(main.float_reasons)
        for outcome in self.outcomes:
            reasons.update(outcome.float_reasons)
        return Coverage(main.compute_ops + sum(o.compute_ops for o in self.outcomes),
                        main.compute_ops_quantized + sum(o.quantized for o in self.outcomes),
                        dict(reasons.most_common()))


def _compute_nodes(body: onnx.GraphProto) -> int:
    """The compute ops of ``body``, its own bodies' included."""
    return sum((node.op_type in COMPUTE_OP_TYPES | INTEGER_COMPUTE_OPS and node.domain in ("", "ai.onnx"))
               + sum(_compute_nodes(inner) for inner in subgraphs(node)) for node in body.node)


QuantizeBody = Callable[[onnx.ModelProto, list[dict], str], tuple]


def quantize_bodies(graph: Graph, data, quantize_body: QuantizeBody, device: str = "cpu") -> Bodies:
    """Quantize every body of ``graph``'s control-flow ops on what it sees over ``data`` (None: nothing to see,
    the bodies stay float) with ``quantize_body(model, feeds, where) -> (QuantizeResult, exported ModelProto)``."""
    ops = [op for op in graph.topological_order() if body_attributes(op)]
    bodies = Bodies()
    if not ops:
        return bodies
    if data is None:
        for op in ops:
            for name in body_attributes(op):
                bodies.outcomes.append(outcome := BodyOutcome(op.name, name))
                outcome.kept_float(op.attributes[name], "no calibration data: kept float")
        return bodies
    recorders = record_bodies(graph, ops, data, device)
    for op in ops:
        replaced = {}
        for name, feeds in recorders[op.name].feeds.items():
            outcome = BodyOutcome(op.name, name, calls=len(feeds))
            bodies.outcomes.append(outcome)
            if not feeds:
                outcome.kept_float(op.attributes[name], NEVER_RUN)
                continue
            model = body_model(graph, op, op.attributes[name], feeds[0])
            if not model.graph.input:  # batched_nms' 'no box' branch: nothing to calibrate, every op of it
                outcome.reason = CONSTANTS_ALONE  # folded as the main graph's constants are
                continue
            try:
                result, exported = quantize_body(model, feeds, f"{op.name}.{name}")
                replaced[name] = exported_body(op.attributes[name], exported, f"{op.name}.{name}.")
            except BodyStaysFloat as exc:
                outcome.kept_float(op.attributes[name], f"kept float: {exc}")
                continue
            except QtoolError as exc:
                outcome.kept_float(op.attributes[name], f"kept float: quantizing it failed ({exc})")
                continue
            found = result.summary["coverage"]  # its own bodies' included
            outcome.compute_ops, outcome.quantized = found["compute_ops"], found["compute_ops_quantized"]
            outcome.float_reasons, outcome.agreement = found["float_reasons"], result.agreement
        if replaced:
            if graph.float_reference is None:  # the float model, its bodies float: what the outputs are measured
                graph.float_reference = graph.copy()  # against (the Q/DQ bodies ran in every "float" run)
            _replace(graph, op, replaced)
    return bodies


def _replace(graph: Graph, op: Operation, replaced: dict[str, onnx.GraphProto]) -> None:
    attributes = {**{name: op.attributes[name] for name in body_attributes(op)}, **replaced}
    reads = outer_references(onnx.helper.make_node(op.op_type, [], [], **attributes))
    graph.set_subgraphs(op, replaced, reads)
