"""Integer products of models that arrive partly quantized: ConvInteger and MatMulInteger (int32 results).

Zero points are subtracted first (so padding is the zero point), the product is
computed exactly in float64 (conv) or int64 (matmul) and returned as int32.
"""

from __future__ import annotations

import torch

from ._common import optional_input
from .conv import conv
from .linear import matmul
from .registry import op_impl


@op_impl("ConvInteger")
def conv_integer(ctx, attrs, inputs):
    """w's zero point is a scalar or one per output channel."""
    x, w = inputs[0].to(torch.float64), inputs[1].to(torch.float64)
    x_zero, w_zero = optional_input(inputs, 2), optional_input(inputs, 3)
    if x_zero is not None:
        x = x - x_zero.to(torch.float64)
    if w_zero is not None:
        w_zero = w_zero.to(torch.float64)
        w = w - (w_zero.reshape(-1, *[1] * (w.dim() - 1)) if w_zero.numel() > 1 else w_zero)
    return [conv(ctx, attrs, [x, w])[0].round().to(torch.int32)]


@op_impl("MatMulInteger")
def matmul_integer(ctx, attrs, inputs):
    """a's zero point is a scalar or one per row of A, b's a scalar or one per column of B."""
    a, b = inputs[0].to(torch.int64), inputs[1].to(torch.int64)
    a_zero, b_zero = optional_input(inputs, 2), optional_input(inputs, 3)
    if a_zero is not None:
        a = a - (a_zero.to(torch.int64).unsqueeze(-1) if a_zero.dim() > 0 and a_zero.numel() > 1
                 else a_zero.to(torch.int64))
    if b_zero is not None:
        b = b - b_zero.to(torch.int64)
    return [matmul(a, b).to(torch.int32)]
