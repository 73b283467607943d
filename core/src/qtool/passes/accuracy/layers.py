"""The layers accuracy passes work on: Conv/ConvTranspose/Gemm/MatMul with a constant weight, and their bias.

A MatMul's bias is the constant operand of an Add that alone reads its
output (how exporters write a Linear layer on 3-D inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...ir import Graph, Operation, Variable
from ...ops import bias_index, input_channel_axis, is_compute, out_channels

if TYPE_CHECKING:  # torch and the executor's op library: only for run_op, not for finding layers
    import torch


@dataclass(frozen=True)
class Bias:
    """Where a layer's bias is: input ``index`` of ``holder`` (the layer or its Add), added times ``factor``."""

    holder: Operation
    index: int
    factor: float

    @property
    def var(self) -> Variable:
        return self.holder.inputs[self.index]


def weight_input(op: Operation) -> int | None:
    """Index of the constant weight: input 1 of a Conv, ConvTranspose, Gemm (transA unset) or MatMul."""
    if not is_compute(op) or len(op.inputs) < 2 or op.inputs[0] is None:
        return None
    if input_channel_axis(op) == 0:  # Gemm with transA: the data's rows are not on its leading axes
        return None
    weight = op.inputs[1]
    if weight is None or not weight.is_parameter or op.inputs[0].is_parameter:
        return None
    return 1


def bias_of(graph: Graph, op: Operation) -> Bias | None:
    """The layer's bias with one value per output channel, or None."""
    channels = out_channels(op)
    index = bias_index(op)
    if index is not None:
        factor = float(op.attributes.get("beta", 1.0)) if op.op_type == "Gemm" else 1.0
        return Bias(op, index, factor) if _per_channel(op.inputs[index], channels) and factor != 0.0 else None
    if op.op_type != "MatMul":
        return None
    out = op.outputs[0]
    if len(out.consumers) != 1 or out in graph.outputs or out.consumers[0].op_type != "Add":
        return None
    add = out.consumers[0]
    for index, var in enumerate(add.inputs):
        if var is not None and var is not out and _per_channel(var, channels):
            return Bias(add, index, 1.0)
    return None


def _per_channel(var: Variable | None, channels: int) -> bool:
    """A parameter holding one value per channel along the last axis (shape (C,), (1, C)...)."""
    if var is None or not var.is_parameter or var.value.size != channels:
        return False
    return var.value.ndim >= 1 and var.value.shape[-1] == channels


def run_op(graph: Graph, op: Operation, args: Sequence[torch.Tensor | None], device) -> list[torch.Tensor]:
    """``op`` computed by the executor's op library on ``args`` (differentiable where torch is)."""
    import torch

    from ...executor.ops import OpContext, get_op

    domain = "" if op.domain == "ai.onnx" else op.domain
    opset = graph.opset if domain == "" else graph.info.opset_imports.get(domain, 1)
    ctx = OpContext(op.op_type, op.name, opset, len(op.outputs), torch.device(device))
    return get_op(op.op_type, op.domain)(ctx, op.attributes, list(args))
