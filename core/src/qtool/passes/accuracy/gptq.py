"""GPTQ: round a weight-only layer column by column, pushing each column's rounding error onto the columns not
yet rounded through the inverse Hessian of the layer's inputs (Frantar et al., 2022).

For a layer ``y = x @ W^T`` with inputs ``X`` (rows: tokens), ``H = 2 X^T X / n`` (plus ``damping`` times its
mean diagonal) and the upper Cholesky factor ``U`` of ``H^-1``; column ``j`` is rounded to ``q_j`` and the rest
updated by ``-(w_j - q_j) / U_jj * U_j,j+1:`` (lazily, ``block_columns`` at a time). ``act_order`` rounds the
columns of largest ``H_jj`` first with each block's scale fixed from the float weight beforehand; without it a
block's scale is fitted when its first column is reached, on the updated weights.

Streaming: one simulated run over the samples, the batches side by side (of any shapes: prompts of several
lengths; none joined to another); each layer is rounded when every batch has reached it, from their inputs in
that run (the layers before it already rounded; ``H`` sums the rows of all of them), and the run carries on
with its rounded output. The result is kept only where it lowers ``tr((Q - W) H (Q - W)^T)`` (the output error
on these inputs) below round-to-nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...executor import TorchExecutor
from ...executor.feeds import to_tensor
from ...ir import Graph
from ..base import Pass, PassResult
from .adaround import _one_thread
from .blockwise import BlockedWeight, blocked_weights
from .layers import run_op
from .options import check, number, positive_int
from ...progress import progress_bar
from .running import take_samples, visit_together

WHERE = "accuracy.gptq"
ROWS = 4096  # output channels rounded at a time


class GPTQ(Pass):
    """Options: ``samples`` (calibration samples, all read by each layer's Hessian), ``damping`` (share of the
    mean Hessian diagonal added to it), ``act_order`` (largest-Hessian columns first), ``block_columns``
    (lazy-update width)."""

    name = "GPTQ"

    def __init__(self, data, *, samples: int = 128, damping: float = 0.01, act_order: bool = True,
                 block_columns: int = 128, device: str = "cpu", progress: bool = False) -> None:
        check(data is not None, WHERE, "data", "GPTQ needs calibration data")
        check(isinstance(act_order, bool), WHERE, "act_order", f"must be true or false, got {act_order!r}")
        self.data, self.device, self.progress, self.act_order = data, device, progress, act_order
        self.samples = positive_int(WHERE, "samples", samples)
        self.damping = number(WHERE, "damping", damping, 0.0, 1.0)
        check(self.damping > 0, WHERE, "damping", "must be above 0: a layer's Hessian X^T X is singular where its "
              "inputs span fewer directions than it has (fewer tokens than input channels), and its Cholesky "
              "factor fails")
        self.block_columns = positive_int(WHERE, "block_columns", block_columns)

    def call(self, graph: Graph) -> PassResult:
        layers = {layer.op.name: layer for layer in blocked_weights(graph)}
        results: list[dict] = []
        if layers:
            batches = take_samples(graph, self.data, self.samples)
            executor = TorchExecutor(graph, self.device)
            with progress_bar(self.progress) as bar:
                task = bar.add_task("GPTQ", total=len(layers))

                def reached(op, inputs: list[list], outputs: list[list]) -> None:  # per batch
                    layer = layers[op.name]
                    with _one_thread(executor.device):
                        results.append({"op": op.name, **self._layer(graph, layer, [x[0] for x in inputs])})
                    weight = to_tensor(np.asarray(op.inputs[layer.index].value), executor.device)
                    for args, out in zip(inputs, outputs, strict=True):
                        args = list(args)
                        args[layer.index] = weight
                        out[0].copy_(run_op(graph, op, args, executor.device)[0])
                    bar.advance(task)

                visit_together(executor, batches, [layer.op for layer in layers.values()], reached, quantize=True)
        return PassResult(graph, any(r["kept"] == "gptq" for r in results), {"layers": results})

    def _layer(self, graph: Graph, layer: BlockedWeight, xs: list[torch.Tensor]) -> dict:
        """Round ``layer`` on its inputs ``xs`` (one tensor per batch)."""
        value = layer.op.inputs[layer.index].value
        n, k = value.shape[::-1] if layer.transposed else value.shape
        hessian, count = torch.zeros(k, k, dtype=torch.float64), 0
        for x in xs:  # a sum over rows: batches of any shape add up
            x = x.detach().reshape(-1, k).to("cpu", torch.float64)
            hessian += x.T @ x
            count += len(x)
        hessian *= 2.0 / max(count, 1)
        scale, zero = layer.params()
        found = factor(hessian.clone(), self.damping, self.act_order)
        rounded = {name: np.empty((n, k), np.result_type(value.dtype, np.float32))  # bfloat16: no torch view
                   for name in ("nearest", "gptq")}
        params = {"nearest": (scale, zero), "gptq": (scale.clone(), zero.clone())}
        errors = {"nearest": 0.0, "gptq": 0.0}
        for start in range(0, n, ROWS):  # rows are independent: a few thousand at a time bound the memory
            rows = slice(start, start + ROWS)
            w = layer.matrix(rows)
            results = {"nearest": layer.quantize(w, scale[rows], zero[rows]),
                       "gptq": gptq(layer, w, found, self.block_columns, scale[rows].clone(), zero[rows].clone())}
            q, params["gptq"][0][rows], params["gptq"][1][rows] = results["gptq"]
            results["gptq"] = q
            for name, result in results.items():
                errors[name] += output_error(result, w, hessian)
                rounded[name][rows] = result.numpy()
        kept = "gptq" if errors["gptq"] < errors["nearest"] else "nearest"
        layer.write(graph, torch.from_numpy(rounded[kept]), *params[kept], kept)
        return {"nearest_error": errors["nearest"], "gptq_error": errors["gptq"], "kept": kept, "rows": count}


def output_error(q: torch.Tensor, w: torch.Tensor, hessian: torch.Tensor) -> float:
    """``tr((q - w) H (q - w)^T)``: the output error of rounding ``w`` to ``q`` on the calibration inputs."""
    d = q - w
    return float(((d @ hessian) * d).sum())


@dataclass
class Factor:
    """What GPTQ needs of a layer's Hessian: the column ``order``, the upper Cholesky factor of the damped inverse
    (in that order), and the ``dead`` columns (never read by the inputs)."""

    order: torch.Tensor
    upper: torch.Tensor
    dead: torch.Tensor
    act_order: bool


def factor(hessian: torch.Tensor, damping: float, act_order: bool) -> Factor:
    k = len(hessian)
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    order = torch.argsort(torch.diag(hessian), descending=True) if act_order else torch.arange(k)
    hessian = hessian[order][:, order]
    hessian += damping * torch.mean(torch.diag(hessian)) * torch.eye(k, dtype=hessian.dtype)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    return Factor(order, upper, dead, act_order)


def gptq(layer: BlockedWeight, w: torch.Tensor, found: Factor, block_columns: int, scale: torch.Tensor,
         zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ-rounded rows ``w`` [rows, K] (dequantized) with their per-block scale and zero point; ``scale`` and
    ``zero`` are the rows' round-to-nearest parameters (refitted here, and returned)."""
    order, upper, act_order = found.order, found.upper, found.act_order
    k, block = w.shape[1], layer.block
    block_columns = max(block, block_columns // block * block)  # a block's columns are updated together
    if act_order:
        scale, zero = layer.fit(torch.where(found.dead, 0.0, w))  # static blocks: parameters from the float weight
    w = w[:, order]  # a copy: the caller's w stays as it was
    w[:, found.dead[order]] = 0.0
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
