"""AWQ: activation-aware weight-only quantization (Lin et al., 2023) - per-input-channel scales searched per tensor.

For a tensor X read only by MatMul/Gemm layers with constant 2-D weights (the SmoothQuant targets), input
channel ``j`` gets ``s_j = mean|X_j|^alpha`` (normalised to a geometric mean of 1): the weights' input rows
are multiplied by ``s`` before round-to-nearest in blocks, so the channels that carry large activations get
finer steps, and X is divided by ``s``. ``alpha`` is searched on a grid of ``grid`` points in [0, 1] for the
least output error ``||X (Q(W s)/s - W)^T||^2`` of all readers together on calibration rows (alpha 0 leaves
the layers as they are: AWQ never does worse than round-to-nearest there). The division goes into X's
producer (a LayerNormalization's scale and bias, a Mul's constant), else, with ``insert_mul`` (default), into
a new Mul. The float function is unchanged; runs on the float graph before dispatch. The grid (bits,
symmetric, block_size) is the ``[weight_only]`` one.
"""

from __future__ import annotations

import numpy as np
import torch

from ...executor import TorchExecutor
from ...ir import Graph, Operation
from ...ops import weight_axis
from ...quant import QuantScheme
from ..base import Pass, PassResult
from .adaround import _one_thread
from .blockwise import fit_blocks, quantize_blocks
from .channels import scale_in
from .options import check, positive_int
from .running import run_watching, take_samples
from .smoothquant import _insert_mul, _into_layernorm, _into_mul, _Target, _targets

WHERE = "accuracy.awq"
ROWS = 1024  # calibration rows kept per tensor for the search
CHUNK = 1 << 18  # weights fake-quantized at a time by the search


class AWQ(Pass):
    """Options: ``samples`` (calibration samples), ``grid`` (alpha values tried), ``insert_mul``, and the grid of
    the weights (``bits``, ``symmetric``, ``block_size``: from ``[weight_only]`` unless given)."""

    name = "AWQ"

    def __init__(self, data, *, samples: int = 64, grid: int = 20, insert_mul: bool = True, bits: int = 4,
                 symmetric: bool = True, block_size: int = 32, device: str = "cpu") -> None:
        check(data is not None, WHERE, "data", "AWQ needs calibration data")
        check(isinstance(insert_mul, bool), WHERE, "insert_mul", f"must be true or false, got {insert_mul!r}")
        check(isinstance(symmetric, bool), WHERE, "symmetric", f"must be true or false, got {symmetric!r}")
        self.data, self.device, self.insert_mul = data, device, insert_mul
        self.samples = positive_int(WHERE, "samples", samples)
        self.grid = positive_int(WHERE, "grid", grid)
        bits = positive_int(WHERE, "bits", bits)
        block_size = positive_int(WHERE, "block_size", block_size)
        self.scheme = QuantScheme.integer(bits, signed=symmetric, symmetric=symmetric, channel_axis=1,
                                          block_size=block_size)

    def call(self, graph: Graph) -> PassResult:
        targets = _targets(graph)
        rows = self._measure(graph, targets) if targets else {}
        scaled, skipped = [], []
        for target in targets:
            with _one_thread(torch.device("cpu")):
                alpha, errors = self._search(target, rows[target.var.name])
            entry = {"tensor": target.var.name, "layers": [op.name for op in target.layers], "alpha": alpha,
                     "nearest_error": errors[0], "awq_error": min(errors)}
            where = self._fold(graph, target, alpha) if alpha > 0 else "skipped: alpha 0 (round-to-nearest) is best"
            (skipped if where.startswith("skipped") else scaled).append({**entry, "into": where})
        return PassResult(graph, bool(scaled), {"scaled": scaled, "skipped": skipped})

    def _measure(self, graph: Graph, targets: list[_Target]) -> dict[str, torch.Tensor]:
        """Mean |X| per channel (into ``target.absmax``) and up to ROWS rows of X per target tensor."""
        by_layer = {target.layers[0].name: target for target in targets}
        rows: dict[str, list[torch.Tensor]] = {}
        sums: dict[str, tuple[torch.Tensor, int]] = {}

        def observe(op, inputs, outputs) -> None:
            target = by_layer[op.name]
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to("cpu", torch.float64)
            total, count = sums.get(target.var.name, (0.0, 0))
            sums[target.var.name] = (total + x.abs().sum(0), count + len(x))
            kept = rows.setdefault(target.var.name, [])
            if sum(len(r) for r in kept) < ROWS:
                kept.append(x[:ROWS])
            target.rank = inputs[0].dim()

        executor = TorchExecutor(graph, self.device)
        run_watching(executor, take_samples(graph, self.data, self.samples),
                     [graph.operations[name] for name in by_layer], observe, quantize=False)
        for target in targets:
            total, count = sums[target.var.name]
            target.absmax = total / max(count, 1)  # the mean magnitude, in SmoothQuant's slot
        return {name: torch.cat(kept)[:ROWS] for name, kept in rows.items()}

    def _search(self, target: _Target, x: torch.Tensor) -> tuple[float, list[float]]:
        weights = [_rows(op) for op in target.layers]
        references = [x @ w.T for w in weights]
        alphas = np.linspace(0.0, 1.0, self.grid + 1)
        errors = []
        for alpha in alphas:
            s = _scales(target.absmax, float(alpha))
            error = 0.0
            for w, ref in zip(weights, references, strict=True):
                for rows in _row_chunks(w.shape):
                    scaled = w[rows] * s[None, :]
                    q = quantize_blocks(scaled, *fit_blocks(scaled, self.scheme), self.scheme) / s[None, :]
                    error += float((x @ q.T - ref[:, rows]).square().sum())
            errors.append(error)
        return float(alphas[int(np.argmin(errors))]), errors

    def _fold(self, graph: Graph, target: _Target, alpha: float) -> str:
        scales = _scales(target.absmax, alpha).numpy()  # X / s into the producer, W * s
        producer = target.var.producer
        folds = {"LayerNormalization": _into_layernorm, "Mul": _into_mul}
        fold = folds.get(producer.op_type) if producer is not None else None
        where = fold(graph, producer, target, scales) if fold is not None else \
            "skipped: no LayerNormalization or constant Mul produces it (insert_mul is off)"
        if where.startswith("skipped") and self.insert_mul:  # a SwiGLU's act(gate) * up has no constant to divide
            where = _insert_mul(graph, target, scales)
        if not where.startswith("skipped"):
            for layer in target.layers:
                graph.set_parameter_value(layer, 1, scale_in(layer, layer.inputs[1].value, scales))
        return where


def _scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    s = mean_abs.clamp_min(1e-8).pow(alpha)
    return s / torch.sqrt(s.max() * s.min())


def _row_chunks(shape: tuple[int, int]) -> list[slice]:
    """Slices of weight rows of about ``CHUNK`` weights: each output row's error is its own, and a whole weight at
    once held about ten float64 copies of it per candidate (a random 78 MB decoder peaked at 1.2 GB)."""
    step = max(1, CHUNK // max(shape[1], 1))
    return [slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def _rows(op: Operation) -> torch.Tensor:
    """The layer's weight as [N, K] float64."""
    w = torch.from_numpy(np.asarray(op.inputs[1].value, np.float64))
    return w if weight_axis(op, op.inputs[1].name) == 0 else w.T
