"""Which of a graph's ops the op library runs, which run through ONNX Runtime, and which nothing can run.

Answered without importing the op library (torch): the built-in ops by name (:mod:`.kernel_names`), the others
as plugins or callers registered them.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from ..ir import Graph, Operation
from .errors import ExecutorError, UnsupportedOpsError
from .kernel_names import BUILTIN_OP_TYPES
from .ort_fallback import FALLBACK_REASON, ort_can_run
from .plugin_ops import load_plugin_ops

CONTROL_FLOW_REASON = (f"control flow: runs float ({FALLBACK_REASON}); quantize quantizes the compute ops inside "
                       "its subgraphs, each calibrated on what it sees (qtool.control_flow)")


def op_type_counts(graph: Graph) -> Counter:
    """How many nodes of each (domain, op_type) the graph holds ('' for the default domain)."""
    return Counter((_domain(op.domain), op.op_type) for op in graph.operations.values())


def has_kernel(op: Operation) -> bool:
    """The op library (plugins' ops included) implements ``op``."""
    domain = _domain(op.domain)
    if domain == "" and op.op_type in BUILTIN_OP_TYPES:
        return True
    load_plugin_ops()
    registry = sys.modules.get("qtool.executor.ops.registry")  # not imported: nobody registered an op
    return registry is not None and registry.is_supported(op.op_type, domain)


def float_reason(op: Operation) -> str | None:
    """Why ``op`` must stay float whatever the configuration says, or None."""
    if has_kernel(op):
        return None
    return CONTROL_FLOW_REASON if op.has_subgraphs else FALLBACK_REASON


def ort_fallback_ops(graph: Graph) -> dict[tuple[str, str], list[str]]:
    """(domain, op_type) -> names of the nodes without a kernel that run in float through ONNX Runtime."""
    return _nodes(graph, lambda op: not has_kernel(op) and ort_can_run(op, graph))


def unsupported_ops(graph: Graph) -> dict[tuple[str, str], list[str]]:
    """(domain, op_type) -> names of the nodes neither the op library nor ONNX Runtime can run."""
    return _nodes(graph, lambda op: not has_kernel(op) and not ort_can_run(op, graph))


def _nodes(graph: Graph, keep) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for op in graph.operations.values():
        if keep(op):
            found.setdefault((_domain(op.domain), op.op_type), []).append(op.name)
    return found


def check_supported(graph: Graph) -> None:
    """Raise UnsupportedOpsError naming every op type and node without an implementation, or an ExecutorError
    naming the first node written in a legacy form no kernel reads (:func:`legacy_form`)."""
    missing = unsupported_ops(graph)
    if missing:
        raise UnsupportedOpsError(missing)
    for op in graph.topological_order():
        found = legacy_form(op)
        if found is not None:
            raise ExecutorError(f"node {op.name!r} ({op.op_type}): {found}; qtool runs it no more than ONNX Runtime "
                                "does (ONNX's version converter does not carry it to a form it loads): export the "
                                "model at a newer opset")


LEGACY_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"})


def legacy_form(op: Operation) -> str | None:
    """What makes ``op`` a form of opset 8 and earlier that computes otherwise than its name does now, or None:
    an elementwise op broadcasting its second operand from an ``axis`` (opset 6 and earlier; numpy broadcasting,
    which replaced it, aligns the last axes), a BatchNormalization of statistics per element (``spatial`` 0)."""
    attributes = op.attributes
    if op.op_type in LEGACY_BROADCAST and attributes.get("broadcast") == 1 and "axis" in attributes:
        first = _rank(op.inputs[0])
        first = _rank(op.outputs[0]) if first is None else first  # the legacy broadcast keeps the first's rank
        second = _rank(op.inputs[1])
        if first is None or second is None or attributes["axis"] % max(first, 1) != first - second:
            return f"opset 6's broadcast of its second operand from axis {attributes['axis']}"
    if op.op_type == "BatchNormalization" and attributes.get("spatial") == 0:
        return "statistics per element (spatial = 0, opset 8 and earlier)"
    return None


def _rank(var) -> int | None:
    if var is None:
        return None
    if var.is_parameter:
        return np.ndim(var.value)
    return None if var.shape is None else len(var.shape)


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain
