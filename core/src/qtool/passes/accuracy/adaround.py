"""AdaRound: learn whether each weight rounds down or up, layer by layer, to reproduce the float output.

For each quantized layer (Conv, ConvTranspose, Gemm, MatMul with a constant
weight quantized on an integer grid with scale ``s`` and zero point ``z``) the
weight becomes ``s * (clip(floor(w / s) + h(V) + z) - z)`` with the rectified
sigmoid ``h(V) = clip(sigmoid(V) * 1.2 - 0.1, 0, 1)``. ``V`` starts where
``h`` equals the fractional part (round to nearest) and Adam minimizes

    ||y(x_q, w~) - y(x, w)||^2 / ||y(x_q, w_nearest) - y(x, w)||^2 + reg_weight * mean(1 - |2h - 1|^beta)

where ``x`` is the layer's input in the float graph and ``x_q`` in the
simulated graph with the layers before it already rounded; ``beta`` anneals
from 20 to 2 after a warm-up without the regularizer, which drives ``h`` to 0
or 1. The hard rounding (``V >= 0``) is kept when it reproduces the float
output better than rounding to nearest on the cached samples. The weight then
holds the dequantized values (state BAKED: on the grid already); its float
value stays on the variable (``float_value``), which float runs read.
"""

from __future__ import annotations

import math
import time
import zlib
from contextlib import contextmanager

import numpy as np
import torch

from ...calibration import load_calibration_data
from ...executor import TorchExecutor
from ...executor.fake_quant import make_quantizer
from ...executor.feeds import to_tensor
from ...ir import Graph, Operation
from ...quant import QuantizationState, TensorQuantizationConfig, fake_quantize
from ...quant.maths import broadcast_parameter
from ...quant.policy import QuantizationPolicy as P
from ..base import Pass, PassResult
from .bias_correction import quantized_layers
from .layers import run_op, weight_input
from .options import check, number, positive_int
from ...progress import progress_bar
from .rows import Rows, layer_rows
from .running import capture_each, visit_together

WHERE = "accuracy.adaround"
ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END = 20.0, 2.0
CHUNK_ROWS = 512  # rows per optimizer step
CHUNK_SAMPLES = 4  # whole samples per optimizer step, where rows cannot be cut
BATCH_SEED = 104729  # a batch's rows are picked with the seed of the first plus this times its number
MIN_ITERATIONS = 20  # fewer, and the annealing cannot harden the rounding


class AdaRound(Pass):
    """Options: ``iterations`` per layer, ``samples`` (calibration samples, run as one batch), ``rows`` (output
    positions sampled per layer), ``min_weight_share`` (skip layers whose weight rounding makes less of the output
    error), ``time_budget_s`` (for the whole pass), ``learning_rate``, ``reg_weight`` (weight of the rounding
    regularizer), ``warmup`` (share of iterations without it), ``seed``. The samples run in one batch where they
    may be joined, else side by side (:func:`_batches`)."""

    name = "AdaRound"

    def __init__(self, data, *, iterations: int = 200, samples: int = 32, rows: int = 2048,
                 min_weight_share: float = 0.0, time_budget_s: float | None = None, learning_rate: float = 0.1,
                 reg_weight: float = 10.0, warmup: float = 0.2, seed: int = 0, device: str = "cpu",
                 progress: bool = False) -> None:
        check(data is not None, WHERE, "data", "AdaRound needs calibration data")
        self.data, self.device, self.progress = data, device, progress
        self.iterations = positive_int(WHERE, "iterations", iterations)
        self.samples = positive_int(WHERE, "samples", samples)
        self.rows = positive_int(WHERE, "rows", rows)
        self.min_weight_share = number(WHERE, "min_weight_share", min_weight_share, 0.0, 1.0)
        self.time_budget_s = None if time_budget_s is None else number(WHERE, "time_budget_s", time_budget_s,
                                                                       0.0, 1e7)
        self.learning_rate = number(WHERE, "learning_rate", learning_rate, 1e-6, 10.0)
        self.reg_weight = number(WHERE, "reg_weight", reg_weight, 0.0, 1e3)
        self.warmup = number(WHERE, "warmup", warmup, 0.0, 1.0)
        check(isinstance(seed, int) and not isinstance(seed, bool), WHERE, "seed",
              f"must be an integer, got {seed!r}")
        self.seed = seed

    def call(self, graph: Graph) -> PassResult:
        layers, skipped = [], []
        for op in quantized_layers(graph):
            why = _unroundable(op.quant.inputs[weight_input(op)])
            if why:
                skipped.append({"op": op.name, "reason": why})
            else:
                layers.append(op)
        results = []
        if layers:
            self._round(graph, layers, results, skipped)
        return PassResult(graph, any(r["kept"] == "adaround" for r in results), {"layers": results,
                                                                                   "skipped": skipped})

    def _round(self, graph: Graph, layers: list[Operation], results: list, skipped: list) -> None:
        """One float run caches each layer's targets; one simulated run rounds each layer when it reaches it and
        carries on with the rounded layer's output, so that every layer sees the rounding of those before it."""
        batches, sizes = _batches(graph, self.data, self.samples)
        executor = TorchExecutor(graph, self.device)
        picks = _Picks(self.rows, self.seed, sizes)
        targets = capture_each(executor, batches, layers, picks.targets, quantize=False)
        quantized_outputs = {s.op for s in executor.fake_quant_sites() if s.side == "output" and s.index == 0}
        clock = _Clock(self.time_budget_s, len(layers))
        with progress_bar(self.progress) as bar:
            task = bar.add_task("AdaRound", total=len(layers) * self.iterations)

            def reached(op: Operation, inputs: list[list], outputs: list[list]) -> None:  # per batch
                bar.update(task, description=f"AdaRound {op.name}")
                with _one_thread(executor.device), torch.enable_grad():
                    # each layer is reached once: its float targets can go (they are large on detectors)
                    problem = _Rounding(graph, op, *picks.pairs(op, inputs, targets.pop(op.name)), self.device)
                    result = self._layer(problem, clock, lambda: bar.advance(task))
                (results if "kept" in result else skipped).append({"op": op.name, **result})
                if result.get("kept") == "adaround":  # the ops after this one read the rounded layer's output
                    for args, out in zip(inputs, outputs, strict=True):
                        value = problem.full_output(args)
                        if op.name in quantized_outputs:
                            value = make_quantizer(op.quant.outputs[0], executor.device)(value)
                        out[0].copy_(value)
                clock.done()
                bar.update(task, completed=clock.finished * self.iterations)

            visit_together(executor, batches, layers, reached, quantize=True)

    def _layer(self, problem: _Rounding, clock: _Clock, tick) -> dict:
        if clock.left() <= 0:
            return {"reason": "time budget spent before this layer"}
        share = problem.weight_share()
        if share < self.min_weight_share:
            return {"reason": f"weight rounding makes {share:.1%} of the output error "
                              f"(< min_weight_share {self.min_weight_share:g})"}
        iterations = clock.iterations(self.iterations, problem.seconds_per_step)
        if iterations < MIN_ITERATIONS:
            return {"reason": f"time budget: {iterations} iterations left for this layer"}
        start = time.monotonic()
        learned = problem.learn(iterations, self.learning_rate, self.reg_weight, self.warmup, self.seed, tick)
        seconds = time.monotonic() - start
        learned_error = problem.error(learned)
        kept = "adaround" if learned_error < problem.nearest_error else "nearest"
        problem.apply(learned if kept == "adaround" else problem.nearest, kept)
        return {"nearest_mse": problem.nearest_error, "adaround_mse": learned_error, "kept": kept,
                "weight_share": share, "iterations": iterations, "rows": problem.rows, "seconds": seconds}


@contextmanager
def _one_thread(device: torch.device):
    """One CPU thread for a layer's rounding problem: its steps are small, and threads mostly wait on each
    other (5 to 15 times slower with two threads on a busy two-core machine)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _batches(graph: Graph, data, limit: int) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """The first ``limit`` calibration samples in batches, and the samples in each: batches of samples (their first
    axis) of one shape joined into one, so that the rounding is learned in few graph runs; the model's calls of the
    ``feeds`` layout and the batches of a model that fixes its batch size are never joined (their inputs need hold
    no samples axis: a state, a shape vector)."""
    data = load_calibration_data(data, graph)
    batches = data.take(limit)
    if data.layout != "samples" or data.fixed_batch:
        return batches, [data.samples_in(batch) for batch in batches]
    groups: dict[tuple, list[dict[str, np.ndarray]]] = {}
    for batch in batches:
        groups.setdefault(tuple((name, a.shape[1:]) for name, a in batch.items()), []).append(batch)
    joined = [{name: np.concatenate([b[name] for b in group]) for name in group[0]} for group in groups.values()]
    return joined, [data.samples_in(batch) for batch in joined]


class _Clock:
    """The pass's time budget shared by the layers still to do."""

    def __init__(self, budget: float | None, layers: int) -> None:
        self.budget, self.todo, self.finished, self.start = budget, layers, 0, time.monotonic()

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - (time.monotonic() - self.start)

    def iterations(self, wanted: int, seconds_per_step: float) -> int:
        """``wanted``, or what this layer's share of the time left allows."""
        share = self.left() / max(self.todo, 1)
        return wanted if share == math.inf else min(wanted, int(share / max(seconds_per_step, 1e-9)))

    def done(self) -> None:
        self.todo, self.finished = self.todo - 1, self.finished + 1


class _Picks:
    """The same random rows of a layer in the float and the simulated run (the whole batch where rows cannot be cut):
    of each batch a share of ``rows`` as large as its share of the ``sizes`` (samples per batch)."""

    def __init__(self, rows: int, seed: int, sizes: list[int]) -> None:
        self.seed = seed
        self.quotas = [rows if len(sizes) == 1 else math.ceil(rows * size / sum(sizes)) for size in sizes]
        self.cutters: dict[str, Rows | None] = {}

    def _index(self, op: Operation, batch: int, args: list) -> tuple[Rows | None, torch.Tensor | None]:
        cutter = self.cutters.setdefault(op.name, layer_rows(op, args))
        if cutter is None:
            return None, None
        count = cutter.count(args)
        seed = self.seed * 7919 + zlib.crc32(op.name.encode()) + batch * BATCH_SEED
        index = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:self.quotas[batch]]
        return cutter, index.to(args[0].device)

    def targets(self, op: Operation, batch: int, inputs: list, outputs: list) -> torch.Tensor:
        cutter, index = self._index(op, batch, inputs)
        return outputs[0] if cutter is None else cutter.target(outputs[0], index)

    def pairs(self, op: Operation, inputs: list[list], targets: list[torch.Tensor]) -> tuple[list, Rows | None]:
        """(inputs, float output) pairs from each batch's ``inputs`` and ``targets``: the picked rows of all batches in
        chunks of ``CHUNK_ROWS``, else (ConvTranspose, 1-D and 3-D Conv) the samples in chunks of ``CHUNK_SAMPLES``,
        else each batch whole. Floating-point tensors come in float32, as the rounding is learned (a float16
        model's inputs met its float32 weight in a matmul)."""
        inputs = [[_float32(arg) for arg in args] for args in inputs]
        targets = [_float32(target) for target in targets]
        picked = [self._index(op, batch, args) for batch, args in enumerate(inputs)]
        cutter = picked[0][0]
        if cutter is None:
            whole = op.op_type in ("Conv", "ConvTranspose")  # whole samples, a few per step
            return [([x, *args[1:]], t) for args, target in zip(inputs, targets, strict=True)
                    for x, t in (zip(args[0].split(CHUNK_SAMPLES), target.split(CHUNK_SAMPLES), strict=True) if whole
                                 else [(args[0], target)])], None
        rows = torch.cat([cutter.take(args, index) for args, (_, index) in zip(inputs, picked, strict=True)])
        target = torch.cat(targets)
        return [([r, *inputs[0][1:]], t) for r, t in zip(rows.split(CHUNK_ROWS), target.split(CHUNK_ROWS),
                                                         strict=True)], cutter


def _float32(value):
    """A floating-point tensor in float32 (float16, bfloat16, float64); anything else as it is."""
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _unroundable(tqc: TensorQuantizationConfig) -> str | None:
    if tqc.state is not QuantizationState.ACTIVATED:
        return f"weight config is {tqc.state.value}, not activated"
    if tqc.scheme.is_floating:
        return f"weight scheme {tqc.scheme.short()} is not an integer grid"
    if tqc.scheme.policy & P.DYNAMIC:
        return "weight scheme is dynamic"
    return None


class _Rounding:
    """One layer's rounding problem over cached (simulated input, float output) pairs."""

    def __init__(self, graph: Graph, op: Operation, pairs: list, cutter: Rows | None, device) -> None:
        self.graph, self.op, self.device, self.pairs, self.cutter = graph, op, torch.device(device), pairs, cutter
        self.index = weight_input(op)
        self.tqc = tqc = op.quant.inputs[self.index]
        self.float_weight = weight = torch.tensor(np.asarray(op.inputs[self.index].value, dtype=np.float32),
                                                  device=self.device)
        scheme = tqc.scheme
        self.scale = broadcast_parameter(np.asarray(tqc.scale, dtype=np.float32), weight, scheme).float()
        self.offset = broadcast_parameter(np.asarray(tqc.offset, dtype=np.float32), weight, scheme).float()
        self.low, self.high = float(scheme.quant_min), float(scheme.quant_max)
        scaled = weight / self.scale
        self.floor = torch.floor(scaled)
        self.rest = scaled - self.floor
        self.nearest = fake_quantize(weight, scheme, tqc.scale, tqc.offset)
        self.rows = sum(len(target) for _, target in pairs) if cutter is not None else None
        start = time.monotonic()
        self.nearest_error = self.error(self.nearest)
        self.seconds_per_step = 3.0 * (time.monotonic() - start) / len(pairs)  # forward and backward, one pair

    def weight(self, up: torch.Tensor) -> torch.Tensor:
        """Dequantized weight rounding up by ``up`` (0..1) from the floor."""
        return (torch.clamp(self.floor + up + self.offset, self.low, self.high) - self.offset) * self.scale

    def full_output(self, inputs: list) -> torch.Tensor:
        """The layer's output on its whole ``inputs`` with the weight it now holds."""
        args = list(inputs)
        args[self.index] = to_tensor(np.asarray(self.op.inputs[self.index].value), self.device)
        with torch.no_grad():
            return run_op(self.graph, self.op, args, self.device)[0]

    def _output(self, pair: int, weight: torch.Tensor) -> torch.Tensor:
        args = list(self.pairs[pair][0])
        args[self.index] = weight
        if self.cutter is not None:
            return self.cutter.compute(args[0], weight, args)
        return run_op(self.graph, self.op, args, self.device)[0]

    def _mse(self, weight: torch.Tensor, reference=None) -> float:
        """Mean squared difference from the float outputs (or from ``reference``'s outputs) over every pair."""
        with torch.no_grad():
            total = sum(float((self._output(i, weight) - (target if reference is None else self._output(i, reference))
                               ).double().square().sum()) for i, (_, target) in enumerate(self.pairs))
        return total / sum(target.numel() for _, target in self.pairs)

    def error(self, weight: torch.Tensor) -> float:
        """Mean squared error against the float outputs over every cached pair."""
        return self._mse(weight)

    def weight_share(self) -> float:
        """How much of the nearest rounding's output error its weight error makes (inputs being the same)."""
        return self._mse(self.nearest, self.float_weight) / max(self.nearest_error, 1e-30)

    def apply(self, weight: torch.Tensor, kept: str) -> None:
        """Write ``weight`` (on the grid) into the graph; its config becomes BAKED."""
        self.graph.set_parameter_value(self.op, self.index, weight.cpu().numpy(), quantized=True)
        self.tqc.bake()
        self.tqc.notes["rounding"] = kept

    def learn(self, iterations: int, learning_rate: float, reg_weight: float, warmup: float, seed: int,
              tick) -> torch.Tensor:
        """The hard-rounded weight after optimizing ``V``."""
        rest = self.rest.clamp(1e-4, 1 - 1e-4)
        v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).requires_grad_(True)
        optimizer = torch.optim.Adam([v], lr=learning_rate)
        reference = max(self.nearest_error, 1e-30)
        order = torch.randint(len(self.pairs), (iterations,), generator=torch.Generator().manual_seed(seed))
        start = int(warmup * iterations)
        for step, pair in enumerate(order.tolist()):
            h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
            loss = (self._output(pair, self.weight(h)) - self.pairs[pair][1]).square().mean() / reference
            if step >= start:
                beta = BETA_START + (BETA_END - BETA_START) * (step - start) / max(iterations - start - 1, 1)
                loss = loss + reg_weight * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tick()
        return self.weight((v.detach() >= 0).float())
