"""A layer's output at sampled positions, computed from rows of its inputs (for AdaRound).

Each output position of a 2-D Conv, each row of a Gemm and each vector of a
MatMul (with a 2-D weight) depends on one row of the input: the input patch at
that position, or the input vector. :func:`layer_rows` gives, for such a layer,
how to cut rows out of a batch (``take``), the float output at the same rows
(``target``) and the output from rows and a weight (``compute``), so that a
reconstruction can run on a random sample of rows instead of whole feature maps.
"""

from __future__ import annotations

import torch

from ...executor.ops._spatial import pad_spatial, resolve_pads, strides_and_dilations
from ...ir import Operation
from ...ops import weight_axis


class Rows:
    """Rows of a MatMul (weight ``(K, N)``): ``x[..., K]`` and ``y[..., N]`` flattened."""

    def __init__(self, op: Operation) -> None:
        self.op = op

    def count(self, args: list) -> int:
        return args[0].numel() // args[0].shape[-1]

    def take(self, args: list, index: torch.Tensor) -> torch.Tensor:
        return args[0].reshape(-1, args[0].shape[-1])[index]

    def target(self, output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return output.reshape(-1, output.shape[-1])[index]

    def compute(self, rows: torch.Tensor, weight: torch.Tensor, args: list) -> torch.Tensor:
        return rows @ weight


class GemmRows(Rows):
    """Rows of a Gemm (``transA`` unset): ``alpha * x @ W' + beta * C`` with a bias the same for every row."""

    def compute(self, rows: torch.Tensor, weight: torch.Tensor, args: list) -> torch.Tensor:
        attrs = self.op.attributes
        out = float(attrs.get("alpha", 1.0)) * (rows @ (weight.T if attrs.get("transB", 0) else weight))
        bias = args[2] if len(args) > 2 else None
        return out if bias is None else out + float(attrs.get("beta", 1.0)) * bias.reshape(-1)


class ConvRows(Rows):
    """Output positions of a 2-D Conv: the input patch (channels x kernel) at each of them."""

    def _geometry(self, x: torch.Tensor, weight_shape) -> tuple[list[int], list[int], list[int], list[int]]:
        kernel = list(weight_shape[2:])
        strides, dilations = strides_and_dilations(self.op.attributes, 2)
        begins, ends = resolve_pads(self.op.attributes, list(x.shape[2:]), kernel, strides, dilations)
        return strides, dilations, begins, ends

    def _out_size(self, args: list) -> tuple[int, int]:
        x, w = args[0], args[1]
        strides, dilations, begins, ends = self._geometry(x, w.shape)
        return tuple((x.shape[2 + i] + begins[i] + ends[i] - (w.shape[2 + i] - 1) * dilations[i] - 1) // strides[i] + 1
                     for i in range(2))

    def count(self, args: list) -> int:
        height, width = self._out_size(args)
        return args[0].shape[0] * height * width

    def take(self, args: list, index: torch.Tensor) -> torch.Tensor:
        x, w = args[0], args[1]
        strides, dilations, begins, ends = self._geometry(x, w.shape)
        height, width = self._out_size(args)
        padded = pad_spatial(x, begins, ends).permute(0, 2, 3, 1)  # N, H, W, C
        n, rest = index // (height * width), index % (height * width)
        rows = (rest // width)[:, None] * strides[0] + torch.arange(w.shape[2], device=x.device) * dilations[0]
        cols = (rest % width)[:, None] * strides[1] + torch.arange(w.shape[3], device=x.device) * dilations[1]
        patches = padded[n[:, None, None], rows[:, :, None], cols[:, None, :]]  # P, kh, kw, C
        return patches.permute(0, 3, 1, 2).reshape(len(index), -1)

    def target(self, output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return output.permute(0, 2, 3, 1).reshape(-1, output.shape[1])[index]

    def compute(self, rows: torch.Tensor, weight: torch.Tensor, args: list) -> torch.Tensor:
        groups, count = int(self.op.attributes.get("group", 1)), len(rows)
        if groups == 1:
            out = rows @ weight.reshape(weight.shape[0], -1).T
        elif groups == weight.shape[0]:  # one output channel per group (depthwise): no tiny matrix products
            out = (rows.reshape(count, groups, -1) * weight.reshape(groups, -1)).sum(-1)
        else:
            out = torch.einsum("pgk,gok->pgo", rows.reshape(count, groups, -1),
                               weight.reshape(groups, weight.shape[0] // groups, -1)).reshape(count, -1)
        bias = args[2] if len(args) > 2 else None
        return out if bias is None else out + bias


def layer_rows(op: Operation, args: list) -> Rows | None:
    """How to cut ``op`` (with its inputs ``args``) into rows, or None where it cannot be."""
    weight = args[1]
    if op.op_type == "Conv" and args[0].dim() == 4:
        return ConvRows(op)
    if op.op_type == "MatMul" and weight.dim() == 2 and args[0].dim() >= 2:
        return Rows(op)
    if op.op_type == "Gemm" and not op.attributes.get("transA", 0):
        bias = args[2] if len(args) > 2 else None
        return GemmRows(op) if bias is None or bias.numel() == weight.shape[weight_axis(op, op.inputs[1].name)] \
            else None
    return None
