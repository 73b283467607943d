"""GPTQ: round a weight-only layer column by column, pushing each column's rounding error onto the columns not
yet rounded through the inverse Hessian of the layer's inputs (Frantar et al., 2022).

For a layer ``y = x @ W^T`` with inputs ``X`` (rows: tokens), ``H = 2 X^T X / n`` (plus ``damping`` times its
mean diagonal) and the upper Cholesky factor ``U`` of ``H^-1``; column ``j`` is rounded to ``q_j`` and the rest
updated by ``-(w_j - q_j) / U_jj * U_j,j+1:`` (lazily, ``block_columns`` at a time). ``act_order`` rounds the
columns of largest ``H_jj`` first with each block's scale fixed from the float weight beforehand; without it a
block's scale is fitted when its first column is reached, on the updated weights.

Streaming: one simulated run over the samples; each layer is rounded when the run reaches it, from its inputs
in that run (the layers before it already rounded), and the run carries on with its rounded output. The
result is kept only where it lowers ``tr((Q - W) H (Q - W)^T)`` (the output error on these inputs) below
round-to-nearest.
"""

from __future__ import annotations

import torch

from ...executor import TorchExecutor
from ...ir import Graph
from ..base import Pass, PassResult
from .adaround import _one_batch, _one_thread
from .blockwise import BlockedWeight, blocked_weights
from .layers import run_op
from .options import check, number, positive_int
from .progress import progress_bar
from .running import take_samples, visit_each

WHERE = "accuracy.gptq"


class GPTQ(Pass):
    """Options: ``samples`` (calibration samples, run as one batch), ``damping`` (share of the mean Hessian
    diagonal added to it), ``act_order`` (largest-Hessian columns first), ``block_columns`` (lazy-update width)."""

    name = "GPTQ"

    def __init__(self, data, *, samples: int = 128, damping: float = 0.01, act_order: bool = True,
                 block_columns: int = 128, device: str = "cpu", progress: bool = False) -> None:
        check(data is not None, WHERE, "data", "GPTQ needs calibration data")
        check(isinstance(act_order, bool), WHERE, "act_order", f"must be true or false, got {act_order!r}")
        self.data, self.device, self.progress, self.act_order = data, device, progress, act_order
        self.samples = positive_int(WHERE, "samples", samples)
        self.damping = number(WHERE, "damping", damping, 0.0, 1.0)
        self.block_columns = positive_int(WHERE, "block_columns", block_columns)

    def call(self, graph: Graph) -> PassResult:
        layers = {layer.op.name: layer for layer in blocked_weights(graph)}
        results: list[dict] = []
        if layers:
            batch = _one_batch(take_samples(graph, self.data, self.samples))
            executor = TorchExecutor(graph, self.device)
            with progress_bar(self.progress) as bar:
                task = bar.add_task("GPTQ", total=len(layers))

                def reached(op, inputs, outputs) -> None:
                    layer = layers[op.name]
                    with _one_thread(executor.device):
                        results.append({"op": op.name, **self._layer(graph, layer, inputs[0])})
                    args = list(inputs)
                    args[layer.index] = torch.as_tensor(op.inputs[layer.index].value, device=inputs[0].device)
                    outputs[0].copy_(run_op(graph, op, args, inputs[0].device)[0])
                    bar.advance(task)

                visit_each(executor, [batch], [layer.op for layer in layers.values()], reached, quantize=True,
                           refresh=True)
        return PassResult(graph, any(r["kept"] == "gptq" for r in results), {"layers": results})

    def _layer(self, graph: Graph, layer: BlockedWeight, x: torch.Tensor) -> dict:
        w = layer.matrix()
        x = x.detach().reshape(-1, w.shape[1]).to("cpu", torch.float64)
        hessian = 2.0 * x.T @ x / max(len(x), 1)
        scale, zero = layer.params()
        nearest = layer.quantize(w, scale, zero)
        q, scale_g, zero_g = gptq(layer, w, hessian.clone(), self.damping, self.act_order, self.block_columns)
        errors = {"nearest": output_error(nearest, w, hessian), "gptq": output_error(q, w, hessian)}
        kept = "gptq" if errors["gptq"] < errors["nearest"] else "nearest"
        if kept == "gptq":
            layer.write(graph, q, scale_g, zero_g, "gptq")
        else:
            layer.write(graph, nearest, scale, zero, "nearest")
        return {"nearest_error": errors["nearest"], "gptq_error": errors["gptq"], "kept": kept}


def output_error(q: torch.Tensor, w: torch.Tensor, hessian: torch.Tensor, rows: int = 4096) -> float:
    """``tr((q - w) H (q - w)^T)``, a few thousand rows at a time (an LM head has tens of thousands)."""
    total = 0.0
    for start in range(0, len(w), rows):
        d = q[start:start + rows] - w[start:start + rows]
        total += float(((d @ hessian) * d).sum())
    return total


def gptq(layer: BlockedWeight, w: torch.Tensor, hessian: torch.Tensor, damping: float, act_order: bool,
         block_columns: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ-rounded ``w`` [N, K] (dequantized) with its per-block scale and zero point."""
    k, block = w.shape[1], layer.block
    block_columns = max(block, block_columns // block * block)  # a block's columns are updated together
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    if act_order:
        scale, zero = layer.fit(torch.where(dead, 0.0, w))  # static blocks: parameters from the float weight
        order = torch.argsort(torch.diag(hessian), descending=True)
    else:
        scale, zero = layer.params()
        order = torch.arange(k)
    w, hessian = w[:, order], hessian[order][:, order]  # copies: the caller's w stays as it was
    w[:, dead[order]] = 0.0
    hessian += damping * torch.mean(torch.diag(hessian)) * torch.eye(k, dtype=hessian.dtype)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    q = torch.zeros_like(w)
    lo, hi = float(layer.scheme.quant_min), float(layer.scheme.quant_max)
    for start in range(0, k, block_columns):
        end = min(start + block_columns, k)
        errors = torch.zeros(w.shape[0], end - start, dtype=w.dtype)
        for i in range(start, end):
            column = int(order[i])
            b = column // block
            if not act_order and column % block == 0:  # fit the block on the weights as updated so far
                s, z = layer.fit(w[:, i:i + block])
                scale[:, b], zero[:, b] = s[:, 0], z[:, 0]
            s, z = scale[:, b], zero[:, b]
            q[:, i] = (torch.clamp(torch.round(w[:, i] / s) + z, lo, hi) - z) * s
            error = (w[:, i] - q[:, i]) / upper[i, i]
            w[:, i:end] -= error[:, None] * upper[i, i:end][None, :]
            errors[:, i - start] = error
        w[:, end:] -= errors @ upper[start:end, end:]
    inverse = torch.argsort(order)
    return q[:, inverse], scale, zero
