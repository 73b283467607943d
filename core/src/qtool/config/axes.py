"""The natural per-channel axis of an op's weight: the axis of its output channels."""

from __future__ import annotations


def natural_weight_axis(op, tensor: str | None = None) -> int | None:
    """Conv 0, ConvTranspose 1, Gemm 0 if transB else 1, MatMul the weight's output axis; else None.

    ``tensor`` names the weight when the op has several parameter inputs.
    """
    if op.op_type == "Conv":
        return 0
    if op.op_type == "ConvTranspose":
        return 1
    if op.op_type == "Gemm":
        return 0 if op.attributes.get("transB", 0) else 1
    if op.op_type == "MatMul":
        return _matmul_axis(op, tensor)
    return None


def _matmul_axis(op, tensor: str | None) -> int | None:
    for index, var in enumerate(op.inputs[:2]):
        if var is None or not (var.name == tensor or (tensor is None and var.is_parameter)):
            continue
        ndim = len(var.shape) if var.shape is not None else None
        if ndim is None or ndim < 2:
            return None
        return ndim - 1 if index == 1 else ndim - 2  # x @ W: columns of W; W @ x: rows of W
    return None
