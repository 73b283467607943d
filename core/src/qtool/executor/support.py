"""Which of a graph's ops the op library can run."""

from __future__ import annotations

from collections import Counter

from ..ir import Graph
from .errors import UnsupportedOpsError
from .ops import is_supported
from .plugin_ops import load_plugin_ops


def op_type_counts(graph: Graph) -> Counter:
    """How many nodes of each (domain, op_type) the graph holds ('' for the default domain)."""
    return Counter((_domain(op.domain), op.op_type) for op in graph.operations.values())


def unsupported_ops(graph: Graph) -> dict[tuple[str, str], list[str]]:
    """(domain, op_type) -> names of the nodes the op library (plugins' ops included) cannot run."""
    load_plugin_ops()
    missing: dict[tuple[str, str], list[str]] = {}
    for op in graph.operations.values():
        if not is_supported(op.op_type, op.domain):
            missing.setdefault((_domain(op.domain), op.op_type), []).append(op.name)
    return missing


def check_supported(graph: Graph) -> None:
    """Raise UnsupportedOpsError naming every op type and node without an implementation."""
    missing = unsupported_ops(graph)
    if missing:
        raise UnsupportedOpsError(missing)


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain
