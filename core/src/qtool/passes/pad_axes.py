"""A Pad with an ``axes`` input (opset 18 on) as the same Pad over every axis: its pads written out at full rank,
0 on the axes it leaves alone. ONNX Runtime 1.32's default session (ORT_ENABLE_ALL) cannot run a QDQ model whose
Pad has ``axes`` before a quantized Conv: its layout transformer permutes the short pads as full-rank ('Gather node
... indices element out of data bounds, idx=2 must be within the inclusive range [-2,1]'), while the model written
without ``axes`` runs, as for a Resize (:mod:`.resize_axes`)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation

_PADS, _AXES = 1, 3


def has_pad_axes(op: Operation) -> bool:
    """A Pad of the ONNX domain with an ``axes`` input."""
    return op.op_type == "Pad" and op.domain in ("", "ai.onnx") and len(op.inputs) > _AXES \
        and op.inputs[_AXES] is not None


def pads_without_axes(graph: Graph, op: Operation, dims: list | None) -> bool:
    """Rewrite ``op`` (see :func:`has_pad_axes`) over every axis of its input, ``dims`` its sizes (None where its
    rank is unknown); False, unchanged, where the rank is unknown, the pads or axes are computed, or they do not
    fit each other."""
    pads, axes, rank = op.inputs[_PADS], op.inputs[_AXES], None if dims is None else len(dims)
    if rank is None or pads is None or not pads.is_parameter or not axes.is_parameter:
        return False
    given, axes = np.asarray(pads.value).reshape(-1), [int(a) for a in np.asarray(axes.value).reshape(-1)]
    if given.size != 2 * len(axes) or any(not -rank <= a < rank for a in axes) \
            or len({a % rank for a in axes}) != len(axes):
        return False
    full = np.zeros(2 * rank, dtype=given.dtype)
    full[[a % rank for a in axes]] = given[:len(axes)]
    full[[rank + a % rank for a in axes]] = given[len(axes):]
    graph.set_input(op, _PADS, graph.add_variable(graph.unique_name(f"{pads.name}_full_rank"), full))
    graph.set_input(op, _AXES, None)
    del op.inputs[_AXES:]
    return True
