"""Which ops onnxruntime knows, without loading the executor (nor torch).

A default-domain op that qtool's own op library implements (:mod:`qtool.executor.kernel_names`, a list by name),
or that qtool hands to onnxruntime by design (control flow, the Q/DQ and integer ops of a model that arrives
quantized), is one onnxruntime knows: tests/core/test_ort_schemas.py checks every such name for the installed
onnxruntime. Other ops are looked up in onnxruntime's schema list, read once a process: about 900 schemas, 20-40 ms
and 6 MB of memory, which a model of common ops then never pays (onnx's own registry costs as much: 8 MB).
"""

from __future__ import annotations

from functools import cache

from .executor.kernel_names import BUILTIN_OP_TYPES
from .ir import Graph, Operation

KNOWN_BY_NAME = BUILTIN_OP_TYPES | {"If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear",
                                    "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}


@cache
def ort_op_types() -> frozenset[tuple[str, str]]:
    """(domain, op_type) of every op onnxruntime has a schema for ('' for the default domain)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    return frozenset(("" if s.domain == "ai.onnx" else s.domain, s.name) for s in get_all_operator_schema())


def ort_can_run(op: Operation, graph: Graph) -> bool:
    """onnxruntime knows the op: a common one, a schema of its own, or a function the model defines."""
    domain = "" if op.domain == "ai.onnx" else op.domain
    if domain == "" and op.op_type in KNOWN_BY_NAME:
        return True
    local = any(f.name == op.op_type and f.domain == op.domain for f in graph.info.functions)
    return local or (domain, op.op_type) in ort_op_types()
