"""Matrix products: Gemm, MatMul, Einsum, and Trilu."""

from __future__ import annotations

import torch

from ._common import optional_input, tensor_op
from .registry import op_impl, register_op


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul; integer products on CUDA run on the CPU (cuBLAS has no integer kernels) and move back."""
    if a.is_cuda and not a.is_floating_point():
        return torch.matmul(a.cpu(), b.cpu()).to(a.device)
    return torch.matmul(a, b)


register_op("MatMul", tensor_op(matmul))


@op_impl("Gemm")
def gemm(ctx, attrs, inputs):
    """Y = alpha * A' B' + beta * C with optional transposes and optional C."""
    a, b, c = inputs[0], inputs[1], optional_input(inputs, 2)
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = a @ b
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else c * beta)
    return [y]


@op_impl("Einsum")
def einsum(ctx, attrs, inputs):
    return [torch.einsum(attrs["equation"].replace(" ", ""), *inputs)]


@op_impl("Trilu")
def trilu(ctx, attrs, inputs):
    x, k = inputs[0], optional_input(inputs, 1)
    diagonal = 0 if k is None else int(k)
    fn = torch.triu if attrs.get("upper", 1) else torch.tril
    return [fn(x, diagonal)]
