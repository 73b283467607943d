"""Sequence ops; a sequence is a Python list of tensors (never quantized)."""

from __future__ import annotations

import torch

from ._common import normalize_axis, optional_input, torch_dtype
from .registry import op_impl


@op_impl("SplitToSequence")
def split_to_sequence(ctx, attrs, inputs):
    """Chunks of ``split`` (one size, or a size per chunk); without it, slices of one, squeezed unless keepdims."""
    x, split = inputs[0], optional_input(inputs, 1)
    axis = normalize_axis(attrs.get("axis", 0), x.dim())
    if split is None:
        parts = list(torch.split(x, 1, dim=axis))
        return [parts if attrs.get("keepdims", 1) else [p.squeeze(axis) for p in parts]]
    sizes = int(split) if split.dim() == 0 else split.tolist()
    return [list(torch.split(x, sizes, dim=axis))]


@op_impl("ConcatFromSequence")
def concat_from_sequence(ctx, attrs, inputs):
    sequence = inputs[0]
    if attrs.get("new_axis", 0):
        return [torch.stack(sequence, dim=normalize_axis(attrs["axis"], sequence[0].dim() + 1))]
    return [torch.cat(sequence, dim=normalize_axis(attrs["axis"], sequence[0].dim()))]


@op_impl("SequenceConstruct")
def sequence_construct(ctx, attrs, inputs):
    return [list(inputs)]


@op_impl("SequenceEmpty")
def sequence_empty(ctx, attrs, inputs):
    torch_dtype(attrs.get("dtype", 1))  # an unknown type fails here, as it would on use
    return [[]]


@op_impl("SequenceLength")
def sequence_length(ctx, attrs, inputs):
    return [torch.tensor(len(inputs[0]), dtype=torch.int64, device=ctx.device)]


@op_impl("SequenceAt")
def sequence_at(ctx, attrs, inputs):
    return [inputs[0][int(inputs[1])]]


@op_impl("SequenceInsert")
def sequence_insert(ctx, attrs, inputs):
    sequence, tensor, position = list(inputs[0]), inputs[1], optional_input(inputs, 2)
    sequence.insert(len(sequence) if position is None else _position(position, len(sequence) + 1), tensor)
    return [sequence]


@op_impl("SequenceErase")
def sequence_erase(ctx, attrs, inputs):
    sequence, position = list(inputs[0]), optional_input(inputs, 1)
    del sequence[-1 if position is None else _position(position, len(sequence))]
    return [sequence]


def _position(position: torch.Tensor, length: int) -> int:
    index = int(position)
    return index + length if index < 0 else index
