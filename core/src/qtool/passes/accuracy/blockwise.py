"""Weight-only layers as the GPTQ/AWQ/HQQ passes see them: the weight as rows [N, K] blocked along K.

A layer is a MatMul (x @ W), Gemm or Gather whose weight is quantized per block along its input axis on
an integer grid (what ``[weight_only]`` configures), with parameters known (ACTIVATED). Rows are output
channels (Gather: table rows), columns the input axis; ``write`` puts a result back in the op's layout,
on the grid, with its parameters (state BAKED, float value kept for float runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...config.weight_only import block_axis
from ...ir import Graph, Operation
from ...ops import input_channel_axis
from ...quant import QuantizationState, compute_scale_offset
from ...quant.policy import QuantizationPolicy as P

LAYER_TYPES = ("MatMul", "Gemm")


@dataclass
class BlockedWeight:
    """One layer's weight: ``op.inputs[index]``, config ``tqc``; ``transposed``: stored [K, N] (rows = columns)."""

    op: Operation
    index: int
    tqc: object
    transposed: bool

    @property
    def scheme(self):
        return self.tqc.scheme

    @property
    def block(self) -> int:
        return self.scheme.block_size

    def matrix(self, rows: slice = slice(None)) -> torch.Tensor:
        """The float weight as [N, K] float64 (``rows`` of it)."""
        value = self.op.inputs[self.index].value
        return torch.from_numpy(np.array(value[:, rows].T if self.transposed else value[rows], np.float64))

    def params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point per block, [N, blocks] float64."""
        scale = torch.from_numpy(np.asarray(self.tqc.scale, np.float64))
        zero = torch.from_numpy(np.broadcast_to(np.asarray(self.tqc.offset, np.float64), scale.shape).copy())
        return (scale.T.contiguous(), zero.T.contiguous()) if self.transposed else (scale, zero)

    def fit(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fit_blocks(w, self.scheme)

    def quantize(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return quantize_blocks(w, scale, zero, self.scheme)

    def write(self, graph: Graph, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, note: str) -> None:
        """Store the dequantized weight ``q`` [N, K] and its parameters; the config becomes BAKED."""
        if self.transposed:
            q, scale, zero = q.T, scale.T, zero.T
        value = q.numpy().astype(self.op.inputs[self.index].value.dtype)
        graph.set_parameter_value(self.op, self.index, value, quantized=True)
        self.tqc.set_params(scale.numpy().astype(np.float32), np.rint(zero.numpy()).astype(np.int32),
                            QuantizationState.BAKED)
        self.tqc.notes["weight_only"] = note


def fit_blocks(w: torch.Tensor, scheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max scale and zero point per block of ``w`` [N, K] (round-to-nearest parameters), [N, blocks]."""
    blocks = _blocks(w, scheme.block_size)
    scale, zero = compute_scale_offset(scheme, blocks.amin(-1).numpy(), blocks.amax(-1).numpy())
    return torch.from_numpy(scale.astype(np.float64)), torch.from_numpy(zero.astype(np.float64))


def quantize_blocks(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, scheme) -> torch.Tensor:
    """``w`` [N, K] on the grid of per-block ``scale``/``zero`` [N, blocks] (dequantized values)."""
    block = scheme.block_size
    return fake_quant(w, _spread(scale, block, w.shape[1]), _spread(zero, block, w.shape[1]),
                      scheme.quant_min, scheme.quant_max)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: float, qmax: float) -> torch.Tensor:
    """Round half to even onto the integer grid and back (element-wise parameters)."""
    return (torch.clamp(torch.round(w / scale) + zero, qmin, qmax) - zero) * scale


def _spread(param: torch.Tensor, block: int, k: int) -> torch.Tensor:
    return param.repeat_interleave(block, dim=1)[:, :k]


def _blocks(w: torch.Tensor, block: int) -> torch.Tensor:
    """[N, K] -> [N, blocks, block], the last block padded with its own last value."""
    n, k = w.shape
    pad = (-k) % block
    if pad:
        w = torch.cat([w, w[:, -1:].expand(n, pad)], dim=1)
    return w.reshape(n, -1, block)


def blocked_weights(graph: Graph, op_types: tuple[str, ...] = LAYER_TYPES) -> list[BlockedWeight]:
    """The weight-only layers of ``op_types`` (MatMul, Gemm, Gather), in topological order."""
    found = []
    for op in graph.topological_order():
        layer = _blocked(op) if op.op_type in op_types and op.quant is not None and op.quant.quantized else None
        if layer is not None:
            found.append(layer)
    return found


def _blocked(op: Operation) -> BlockedWeight | None:
    index = 0 if op.op_type == "Gather" else 1
    if len(op.inputs) <= index or op.inputs[index] is None or not op.inputs[index].is_parameter:
        return None
    if input_channel_axis(op) == 0 or np.ndim(op.inputs[index].value) != 2:  # Gemm with transA: not x @ W
        return None
    tqc = op.quant.inputs[index]
    if tqc is None or tqc.state is not QuantizationState.ACTIVATED:
        return None
    scheme = tqc.scheme
    if not scheme.policy & P.PER_BLOCK or scheme.is_floating or scheme.policy & P.DYNAMIC:
        return None
    k_axis = block_axis(op, op.inputs[index].name)
    if scheme.channel_axis % 2 != k_axis:
        return None
    return BlockedWeight(op, index, tqc, transposed=k_axis == 0)
