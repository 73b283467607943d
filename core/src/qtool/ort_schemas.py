"""Which ops onnxruntime knows, without loading the executor (nor torch).

A default-domain op that qtool's own op library implements (:mod:`qtool.executor.kernel_names`, a list by name),
or that qtool hands to onnxruntime by design (control flow, the Q/DQ and integer ops of a model that arrives
quantized), is one onnxruntime knows: tests/core/test_ort_schemas.py checks every such name for the installed
onnxruntime. Other ops are looked up in onnxruntime's schema list, read once a process: about 900 schemas, 20-40 ms
and 6 MB of memory, which a model of common ops then never pays (onnx's own registry costs as much: 8 MB).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from onnx import TensorProto, helper

from .executor.kernel_names import BUILTIN_OP_TYPES
from .ir import Graph, Operation

KNOWN_BY_NAME = BUILTIN_OP_TYPES | {"If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear",
                                    "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}


@cache
def _schemas() -> dict[tuple[str, str], object]:
    """onnxruntime's schema of each op by (domain, op_type) ('' for the default domain; the newest version)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema

    newest: dict[tuple[str, str], object] = {}
    for schema in get_all_operator_schema():
        key = ("" if schema.domain == "ai.onnx" else schema.domain, schema.name)
        if key not in newest or schema.since_version > newest[key].since_version:
            newest[key] = schema
    return newest


@cache
def ort_op_types() -> frozenset[tuple[str, str]]:
    """(domain, op_type) of every op onnxruntime has a schema for ('' for the default domain)."""
    return frozenset(_schemas())


def ort_can_run(op: Operation, graph: Graph) -> bool:
    """onnxruntime knows the op: a common one, or a schema of its own (a function the model defines is inlined on
    import)."""
    domain = "" if op.domain == "ai.onnx" else op.domain
    if domain == "" and op.op_type in KNOWN_BY_NAME:
        return True
    return (domain, op.op_type) in _schemas()


def type_outputs(graph: Graph) -> None:
    """Give the outputs of ops from outside ONNX's own domain (onnxruntime's contrib ops: an ORT-optimized BERT's
    EmbedLayerNormalization, Attention, SkipLayerNormalization...) the dtype their onnxruntime schema gives them,
    where the model does not say: a type its constraint allows alone, or that of an input bound to the same type
    parameter. Without it such an op fed integer token ids looked like index computation, and everything after it
    too. Models of ONNX's own ops never read the schema list."""
    if all(op.domain in ("", "ai.onnx") for op in graph.operations.values()):
        return
    for op in graph.topological_order():
        if op.domain in ("", "ai.onnx") or all(out.dtype is not None for out in op.outputs):
            continue
        schema = _schemas().get((op.domain, op.op_type))
        if schema is None:
            continue
        for out, dtype in zip(op.outputs, _output_dtypes(schema, op), strict=True):
            if out.dtype is None and dtype is not None:
                out.dtype = dtype


def _output_dtypes(schema, op: Operation) -> list[np.dtype | None]:
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    bound: dict[str, np.dtype] = {}
    for position, var in enumerate(op.inputs):
        formal = _formal(schema.inputs, position)
        if var is not None and var.dtype is not None and formal is not None:
            bound.setdefault(formal.typeStr, np.dtype(var.dtype))
    found = []
    for position in range(len(op.outputs)):
        formal = _formal(schema.outputs, position)
        type_str = formal.typeStr if formal is not None else None
        choices = allowed.get(type_str, [type_str])
        found.append(bound.get(type_str) or (_np_dtype(choices[0]) if len(choices) == 1 else None))
    return found


def _formal(parameters, position: int):
    """The schema's formal parameter at ``position`` (the last one where it is variadic), or None."""
    if position < len(parameters):
        return parameters[position]
    last = parameters[-1] if parameters else None
    return last if last is not None and last.option.name == "Variadic" else None


def _np_dtype(type_str: str | None) -> np.dtype | None:
    """``tensor(float)`` as a numpy dtype (None for sequences, maps and unknown names)."""
    if not type_str or not type_str.startswith("tensor(") or not type_str.endswith(")"):
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(TensorProto.DataType.Value(type_str[7:-1].upper())))
    except (ValueError, KeyError, TypeError):
        return None
