"""A dense layer written as an Einsum (JAX and TensorFlow exports: ``bsd,df->bsf``) as the MatMul it computes, so
that dispatch quantizes it as one and ONNX Runtime runs an integer MatMul instead of a float Einsum."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation


def dense_einsum(op: Operation) -> bool | None:
    """Whether ``op`` is an Einsum of an activation and a 2-D weight contracted over the activation's last axis,
    the output keeping the activation's other axes in order then the weight's other one: None when it is not,
    else whether the weight is stored transposed (``fd`` against ``df``)."""
    if op.op_type != "Einsum" or op.domain not in ("", "ai.onnx") or len(op.inputs) != 2 or len(op.outputs) != 1:
        return None
    data, weight = op.inputs
    if data is None or weight is None or not weight.is_parameter or np.ndim(weight.value) != 2:
        return None
    equation = op.attributes.get("equation", b"")
    equation = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
    operands, _, result = equation.partition("->")
    terms = operands.split(",")
    if "." in equation or len(terms) != 2 or len(terms[1]) != 2 or not terms[0]:
        return None
    letters, pair = terms
    contracted = letters[-1]
    kept = pair.replace(contracted, "", 1)
    if len(set(letters)) != len(letters) or contracted not in pair or len(kept) != 1 or kept in letters:
        return None
    return None if result != letters[:-1] + kept else pair[0] == kept


def as_matmul(graph: Graph, op: Operation, transposed: bool) -> None:
    """Replace the Einsum ``op`` (see :func:`dense_einsum`) by a MatMul of the same name and output; a weight
    stored transposed is read through a transposed copy."""
    data, weight = op.inputs
    if transposed:
        weight = graph.add_variable(graph.unique_name(f"{weight.name}_transposed"),
                                    np.ascontiguousarray(np.asarray(weight.value).T))
    name, result, doc = op.name, op.outputs[0], op.doc_string
    graph.remove_operation(op)
    graph.add_operation("MatMul", [data, weight], [result], name=name).doc_string = doc
