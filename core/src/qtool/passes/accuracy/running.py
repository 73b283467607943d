"""Calibration samples for accuracy passes, and executor runs that watch some ops."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch

from ...calibration import load_calibration_data
from ...executor import TorchExecutor
from ...executor.feeds import to_tensor
from ...ir import Graph, Operation

Batch = Mapping[str, np.ndarray]


def take_samples(graph: Graph, data, limit: int) -> list[dict[str, np.ndarray]]:
    """The first ``limit`` samples of ``data`` (anything ``load_calibration_data`` takes), in batches."""
    batches, taken = [], 0
    for batch in load_calibration_data(data, graph):
        take = min(len(next(iter(batch.values()))), limit - taken)
        batches.append({name: array[:take] for name, array in batch.items()})
        taken += take
        if taken >= limit:
            break
    return batches


def run_watching(executor: TorchExecutor, batches: Iterable[Batch], ops: Iterable[Operation],
                 hook: Callable, *, quantize: bool) -> None:
    """Run every batch (float or simulated) far enough to execute ``ops``, calling ``hook(op, inputs, outputs)``."""
    wanted = {op.name for op in ops}
    outputs = list(dict.fromkeys(op.outputs[0].name for op in ops))

    def watch(op, inputs, results):
        if op.name in wanted:
            hook(op, inputs, results)

    saved = executor.quantize
    executor.quantize = quantize
    handle = executor.add_hook(watch)
    try:
        with torch.no_grad():
            for batch in batches:
                executor.forward_torch({k: to_tensor(v, executor.device) for k, v in batch.items()}, outputs)
    finally:
        handle.remove()
        executor.quantize = saved


def capture(executor: TorchExecutor, batches: Iterable[Batch], op: Operation, *, quantize: bool
            ) -> list[tuple[list[torch.Tensor | None], list[torch.Tensor]]]:
    """``op``'s inputs (as it saw them) and outputs per batch."""
    seen: list[tuple[list[torch.Tensor | None], list[torch.Tensor]]] = []
    run_watching(executor, batches, [op], lambda _, inputs, outputs: seen.append((list(inputs), list(outputs))),
                 quantize=quantize)
    return seen
