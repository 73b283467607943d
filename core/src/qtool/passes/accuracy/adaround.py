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
value stays in the config's notes for float reference runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ...executor import TorchExecutor
from ...ir import Graph, Operation
from ...quant import QuantizationState, TensorQuantizationConfig, fake_quantize
from ...quant.maths import _broadcast as broadcast_parameter
from ...quant.policy import QuantizationPolicy as P
from ..base import Pass, PassResult
from .bias_correction import quantized_layers
from .layers import run_op, weight_input
from .options import check, number, positive_int
from .progress import progress_bar
from .running import capture, take_samples

WHERE = "accuracy.adaround"
ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END = 20.0, 2.0


class AdaRound(Pass):
    """Options: ``iterations`` per layer, ``samples`` (calibration samples cached), ``learning_rate``,
    ``reg_weight`` (weight of the rounding regularizer), ``warmup`` (share of iterations without it),
    ``seed``."""

    name = "AdaRound"

    def __init__(self, data, *, iterations: int = 300, samples: int = 256, learning_rate: float = 0.1,
                 reg_weight: float = 10.0, warmup: float = 0.2, seed: int = 0, device: str = "cpu",
                 progress: bool = False) -> None:
        check(data is not None, WHERE, "data", "AdaRound needs calibration data")
        self.data, self.device, self.progress = data, device, progress
        self.iterations = positive_int(WHERE, "iterations", iterations)
        self.samples = positive_int(WHERE, "samples", samples)
        self.learning_rate = number(WHERE, "learning_rate", learning_rate, 1e-6, 10.0)
        self.reg_weight = number(WHERE, "reg_weight", reg_weight, 0.0, 1e3)
        self.warmup = number(WHERE, "warmup", warmup, 0.0, 1.0)
        check(isinstance(seed, int), WHERE, "seed", f"must be an integer, got {seed!r}")
        self.seed = seed

    def call(self, graph: Graph) -> PassResult:
        layers, skipped = [], []
        for op in quantized_layers(graph):
            why = _unroundable(op.quant.inputs[weight_input(op)])
            if why:
                skipped.append({"op": op.name, "reason": why})
            else:
                layers.append(op)
        batches = take_samples(graph, self.data, self.samples) if layers else []
        executor = TorchExecutor(graph, self.device) if layers else None
        results = []
        with progress_bar(self.progress) as bar:
            task = bar.add_task("AdaRound", total=len(layers) * self.iterations)
            for op in layers:
                bar.update(task, description=f"AdaRound {op.name}")
                results.append(self._layer(graph, executor, batches, op, lambda: bar.advance(task)))
        return PassResult(graph, bool(results), {"layers": results, "skipped": skipped})

    def _layer(self, graph: Graph, executor: TorchExecutor, batches, op: Operation, tick) -> dict:
        executor.refresh()
        targets = [outputs[0] for _, outputs in capture(executor, batches, op, quantize=False)]
        inputs = [args for args, _ in capture(executor, batches, op, quantize=True)]
        index = weight_input(op)
        tqc = op.quant.inputs[index]
        problem = _Rounding(graph, op, index, tqc, inputs, targets, self.device)
        learned = problem.learn(self.iterations, self.learning_rate, self.reg_weight, self.warmup, self.seed, tick)
        learned_error = problem.error(learned)
        kept = "adaround" if learned_error < problem.nearest_error else "nearest"
        graph.set_parameter_value(op, index, (learned if kept == "adaround" else problem.nearest).cpu().numpy(),
                                  quantized=True)
        tqc.state = QuantizationState.BAKED
        tqc.notes["rounding"] = kept
        return {"op": op.name, "nearest_mse": problem.nearest_error, "adaround_mse": learned_error, "kept": kept}


def _unroundable(tqc: TensorQuantizationConfig) -> str | None:
    if tqc.state is not QuantizationState.ACTIVATED:
        return f"weight config is {tqc.state.value}, not activated"
    if tqc.scheme.is_floating:
        return f"weight scheme {tqc.scheme.short()} is not an integer grid"
    if tqc.scheme.policy & P.DYNAMIC:
        return "weight scheme is dynamic"
    return None


class _Rounding:
    """One layer's rounding problem over cached inputs and float targets."""

    def __init__(self, graph: Graph, op: Operation, index: int, tqc: TensorQuantizationConfig,
                 inputs: list, targets: list, device) -> None:
        self.graph, self.op, self.index, self.device = graph, op, index, torch.device(device)
        self.inputs, self.targets = inputs, targets
        weight = torch.tensor(np.asarray(op.inputs[index].value, dtype=np.float32), device=self.device)
        scheme = tqc.scheme
        self.scale = broadcast_parameter(np.asarray(tqc.scale, dtype=np.float32), weight, scheme).float()
        self.offset = broadcast_parameter(np.asarray(tqc.offset, dtype=np.float32), weight, scheme).float()
        self.low, self.high = float(scheme.quant_min), float(scheme.quant_max)
        scaled = weight / self.scale
        self.floor = torch.floor(scaled)
        self.rest = scaled - self.floor
        self.nearest = fake_quantize(weight, scheme, tqc.scale, tqc.offset)
        self.nearest_error = self.error(self.nearest)

    def weight(self, up: torch.Tensor) -> torch.Tensor:
        """Dequantized weight rounding up by ``up`` (0..1) from the floor."""
        return (torch.clamp(self.floor + up + self.offset, self.low, self.high) - self.offset) * self.scale

    def _output(self, batch: int, weight: torch.Tensor) -> torch.Tensor:
        args = list(self.inputs[batch])
        args[self.index] = weight
        return run_op(self.graph, self.op, args, self.device)[0]

    def error(self, weight: torch.Tensor) -> float:
        """Mean squared error against the float outputs over every cached batch."""
        with torch.no_grad():
            total = sum(float((self._output(b, weight) - t).double().square().sum())
                        for b, t in enumerate(self.targets))
        return total / sum(t.numel() for t in self.targets)

    def learn(self, iterations: int, learning_rate: float, reg_weight: float, warmup: float, seed: int,
              tick) -> torch.Tensor:
        """The hard-rounded weight after optimizing ``V``."""
        rest = self.rest.clamp(1e-4, 1 - 1e-4)
        v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).requires_grad_(True)
        optimizer = torch.optim.Adam([v], lr=learning_rate)
        reference = max(self.nearest_error, 1e-30)
        order = torch.randint(len(self.targets), (iterations,), generator=torch.Generator().manual_seed(seed))
        start = int(warmup * iterations)
        for step, batch in enumerate(order.tolist()):
            h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
            loss = (self._output(batch, self.weight(h)) - self.targets[batch]).square().mean() / reference
            if step >= start:
                beta = BETA_START + (BETA_END - BETA_START) * (step - start) / max(iterations - start - 1, 1)
                loss = loss + reg_weight * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tick()
        return self.weight((v.detach() >= 0).float())
