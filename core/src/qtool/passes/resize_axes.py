"""A Resize with an ``axes`` attribute (opset 18 on) as the same Resize over every axis: scale 1 (or the input's
size) on the axes it leaves alone, a full-rank roi. Exact: an axis resized by 1 is sampled at its own points in
every mode. ONNX Runtime 1.32's default session (ORT_ENABLE_ALL) cannot run a QDQ model whose Resize has
``axes``: its layout transformer reads the short scales as full-rank ('Gather node ... indices element out of
data bounds, idx=2 must be within the inclusive range [-2,1]'; onnxruntime.quantization's output fails alike),
while the model written without ``axes`` runs."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation

_ROI, _SCALES, _SIZES = 1, 2, 3


def has_axes(op: Operation) -> bool:
    """A Resize of the ONNX domain with an ``axes`` attribute."""
    return op.op_type == "Resize" and op.domain in ("", "ai.onnx") and op.attributes.get("axes") is not None


def without_axes(graph: Graph, op: Operation, rank: int | None, dims: list | None) -> bool:
    """Rewrite ``op`` (see :func:`has_axes`) over all ``rank`` axes of its input, ``dims`` its sizes (None where
    unknown); False, unchanged, where that cannot be written exactly: the rank unknown, a computed roi, scales or
    sizes, sizes on an axis of unknown size, or sizes read under a keep_aspect_ratio_policy (which would count the
    other axes in)."""
    if rank is None:
        return False
    axes = [int(a) for a in op.attributes["axes"]]
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        return False
    axes = [a % rank for a in axes]
    operands = {i: _operand(op, i) for i in (_ROI, _SCALES, _SIZES)}
    if any(value is False for value in operands.values()):
        return False
    roi, scales, sizes = operands[_ROI], operands[_SCALES], operands[_SIZES]
    if any(value is not None and value.size != len(axes) for value in (scales, sizes)):
        return False
    if sizes is not None:
        policy = op.attributes.get("keep_aspect_ratio_policy", "stretch")
        policy = policy.decode() if isinstance(policy, bytes) else policy
        others = [a for a in range(rank) if a not in axes]
        if policy != "stretch" or dims is None or any(not isinstance(dims[a], int) or dims[a] <= 0 for a in others):
            return False
        sizes = _full(sizes, axes, np.array([d if isinstance(d, int) else 0 for d in dims], dtype=sizes.dtype))
    if scales is not None:
        scales = _full(scales, axes, np.ones(rank, dtype=scales.dtype))
    if roi is not None:
        half = len(axes)
        if roi.size != 2 * half:
            return False
        starts = _full(roi[:half], axes, np.zeros(rank, dtype=roi.dtype))
        ends = _full(roi[half:], axes, np.ones(rank, dtype=roi.dtype))
        roi = np.concatenate([starts, ends])
    for index, value in ((_ROI, roi), (_SCALES, scales), (_SIZES, sizes)):
        if value is not None:
            name = graph.unique_name(f"{op.inputs[index].name}_full_rank")
            graph.set_input(op, index, graph.add_variable(name, value))
    del op.attributes["axes"]
    return True


def input_dims(graph: Graph, op: Operation, inferred: dict) -> list | None:
    """The sizes of ``op``'s data input (a dimension None or a name where unknown): as the graph declares them,
    else by ONNX shape inference of the whole graph, run once into ``inferred`` (None: failed or no rank)."""
    shape = op.inputs[0].shape if op.inputs[0] is not None else None
    if shape is not None:
        return list(shape)
    if "shapes" not in inferred:
        inferred["shapes"] = _inferred_shapes(graph)
    return inferred["shapes"].get(op.inputs[0].name) if op.inputs[0] is not None else None


def _inferred_shapes(graph: Graph) -> dict[str, list]:
    import onnx

    from ..ir import shape_only_tensor, to_model_proto

    try:  # inference needs a weight's shape, not its bytes
        model = onnx.shape_inference.infer_shapes(to_model_proto(graph, tensor=shape_only_tensor), data_prop=True)
    except Exception:  # an op onnx does not know, a graph over 2 GB...: the Resize stays as it is
        return {}
    return {info.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in info.type.tensor_type.shape.dim]
            for info in (*model.graph.value_info, *model.graph.output) if info.type.tensor_type.HasField("shape")}


def _operand(op: Operation, index: int) -> np.ndarray | None | bool:
    """Input ``index``'s constant value; None where absent or empty (Resize-13's empty scales beside sizes), False
    where computed."""
    var = op.inputs[index] if index < len(op.inputs) else None
    if var is None:
        return None
    if not var.is_parameter:
        return False
    value = np.asarray(var.value).reshape(-1)
    return None if value.size == 0 else value


def _full(given: np.ndarray, axes: list[int], base: np.ndarray) -> np.ndarray:
    """``base`` with ``given`` at ``axes``."""
    full = base.copy()
    full[axes] = given
    return full
