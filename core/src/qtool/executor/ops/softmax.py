"""Softmax, LogSoftmax and Hardmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import normalize_axis
from .registry import register_op


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the first maximum along ``dim``."""
    index = torch.argmax(x, dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, index, 1)


def _along_axis(fn):
    """Apply ``fn(x, dim)`` the way the opset defines ``axis``.

    Before opset 13 the input is coerced to 2D [prod(shape[:axis]), prod(shape[axis:])]
    and ``fn`` runs over the second dimension; from 13 on it runs over ``axis`` alone.
    """

    def op(ctx, attrs, inputs):
        x = inputs[0]
        if ctx.opset >= 13:
            return [fn(x, normalize_axis(attrs.get("axis", -1), x.dim()))]
        axis = normalize_axis(attrs.get("axis", 1), x.dim())
        flat = x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return [fn(flat, 1).reshape(x.shape)]

    return op


register_op("Softmax", _along_axis(lambda x, dim: F.softmax(x, dim)))
register_op("LogSoftmax", _along_axis(lambda x, dim: F.log_softmax(x, dim)))
register_op("Hardmax", _along_axis(_hardmax))
