"""Ops that pass their input through at inference: Identity and Dropout."""

from __future__ import annotations

import torch

from ._common import optional_input
from .registry import op_impl


@op_impl("Identity")
def identity(ctx, attrs, inputs):
    return [inputs[0]]


@op_impl("Dropout")
def dropout(ctx, attrs, inputs):
    """Identity with an all-true mask unless training_mode (opset 12+) is set.

    Before opset 10 the mask has the data's type; since, it is bool.
    """
    x = inputs[0]
    training = optional_input(inputs, 2) if ctx.opset >= 12 else None
    if training is not None and bool(training):
        ratio = optional_input(inputs, 1)
        ratio = 0.5 if ratio is None else float(ratio)
        mask = torch.rand(x.shape, device=x.device) >= ratio
        y = x * mask / (1 - ratio)
    else:
        y, mask = x, torch.ones_like(x, dtype=torch.bool)
    if ctx.opset < 10:
        mask = mask.to(x.dtype)
    return [y, mask][: ctx.num_outputs]
