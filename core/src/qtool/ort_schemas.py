"""Which ops onnxruntime knows, read from its schemas without loading the executor (nor torch)."""

from __future__ import annotations

from functools import cache

from .ir import Graph, Operation


@cache
def ort_op_types() -> frozenset[tuple[str, str]]:
    """(domain, op_type) of every op onnxruntime has a schema for ('' for the default domain)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    return frozenset(("" if s.domain == "ai.onnx" else s.domain, s.name) for s in get_all_operator_schema())


def ort_can_run(op: Operation, graph: Graph) -> bool:
    """onnxruntime knows the op: a schema of its own, or a function the model defines."""
    domain = "" if op.domain == "ai.onnx" else op.domain
    local = any(f.name == op.op_type and f.domain == op.domain for f in graph.info.functions)
    return local or (domain, op.op_type) in ort_op_types()
