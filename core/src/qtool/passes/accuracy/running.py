"""Calibration samples for accuracy passes, and executor runs that watch some ops."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...analysis.metrics import output_array
from ...calibration import load_calibration_data, ort_engine
from ...calibration.provenance import feed_error
from ...calibration.threads import pass_threads
from ...errors import QtoolError
from ...ir import Graph, Operation

if TYPE_CHECKING:  # the executor (torch) is imported where a run needs it, not by the onnxruntime path
    import torch

    from ...executor import TorchExecutor

Batch = Mapping[str, np.ndarray]


def take_samples(graph: Graph, data, limit: int) -> list[dict[str, np.ndarray]]:
    """The first ``limit`` samples of ``data`` (anything ``load_calibration_data`` takes), in batches."""
    return load_calibration_data(data, graph).take(limit)


def ort_float_arrays(graph: Graph, device: str, batches: Sequence[Batch], names: Sequence[str], *,
                     splittable: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]] | None:
    """``(batch number, {name: float value})`` for the tensors ``names`` of each batch, computed by onnxruntime
    (:mod:`qtool.calibration.ort_engine`: several times faster than the executor on the CPU; a batch's tensors may
    come in groups that fit its memory budget, and, ``splittable`` (samples along the first axis), in runs of
    samples). None where onnxruntime cannot stand in for the executor."""
    if ort_engine.refusal(graph, device) is not None:
        return None
    try:
        run = ort_engine.OrtFloatRun(graph, names, threads=pass_threads())
    except ort_engine.ORT_ERRORS:
        return None

    def values() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for number, batch in enumerate(batches):
            try:
                for arrays in run.run(batch, splittable=splittable):
                    yield number, arrays
            except ort_engine.ORT_ERRORS as exc:  # the model's or the feed's fault, not the pass's: the file named
                raise feed_error(batch, ort_engine.failure(exc), errors=ort_engine.ORT_ERRORS,
                                 retry=lambda part: list(run.run(part, splittable=splittable)),
                                 describe=ort_engine.failure) or QtoolError(ort_engine.failure(exc)) from exc

    return values()


def ort_float_values(executor: TorchExecutor, batches: Sequence[Batch], names: Sequence[str]
                     ) -> Iterator[tuple[int, dict[str, torch.Tensor]]] | None:
    """:func:`ort_float_arrays` of the executor's graph as torch tensors (None where onnxruntime cannot run it)."""
    import torch

    arrays = ort_float_arrays(executor.graph, executor.device, batches, names)
    if arrays is None:
        return None
    return ((number, {name: torch.from_numpy(np.array(a) if not a.flags.writeable else a)
                      for name, a in ((name, output_array(v)) for name, v in values.items())})
            for number, values in arrays)


def run_watching(executor: TorchExecutor, batches: Iterable[Batch], ops: Iterable[Operation],
                 hook: Callable, *, quantize: bool) -> None:
    """Run every batch (float or simulated) far enough to execute ``ops``, calling ``hook(op, inputs, outputs)``."""
    ops = list(ops)
    _run(executor, batches, list(dict.fromkeys(op.outputs[0].name for op in ops)), {op.name for op in ops}, hook,
         quantize)


def capture_each(executor: TorchExecutor, batches: Sequence[Batch], ops: Sequence[Operation], keep: Callable,
                 *, quantize: bool) -> dict[str, list]:
    """``keep(op, batch_number, inputs, outputs)`` for every op and batch, by op name and batch."""
    kept: dict[str, list] = {op.name: [] for op in ops}

    def hook(op, inputs, outputs):
        kept[op.name].append(keep(op, len(kept[op.name]), inputs, outputs))

    visit_each(executor, batches, ops, hook, quantize=quantize)
    return kept


def visit_each(executor: TorchExecutor, batches: Sequence[Batch], ops: Sequence[Operation], hook: Callable,
               *, quantize: bool, refresh: bool = False) -> None:
    """``hook(op, inputs, outputs)`` for every op (in topological order) and batch.

    Runs up to the last op not seen yet, again while some op was not seen (on a
    branch the last one does not read), so that no op's output is held to the
    end; ``refresh`` refreshes the executor before each run (the hook changes
    parameters).
    """
    def run(pending, watch) -> None:
        if refresh:
            executor.refresh()
        _run(executor, batches, [pending[-1].outputs[0].name], {op.name for op in pending}, watch, quantize)

    _until_seen(ops, hook, run)


def visit_together(executor: TorchExecutor, batches: Sequence[Batch], ops: Sequence[Operation], hook: Callable,
                   *, quantize: bool) -> None:
    """``hook(op, inputs, outputs)`` for every op (in topological order), with the inputs and outputs of every
    batch (lists, one per batch): the batches run side by side, none past an op before the hook has seen them
    all; the executor is refreshed before each run (the hook changes parameters). Runs again, as
    :func:`visit_each` does, while an op on a branch the last one does not read was not seen."""
    import torch

    from ...executor.feeds import to_tensor

    def run(pending, watch) -> None:
        executor.refresh()
        with executor.mode(quantize=quantize), torch.no_grad():
            executor.forward_together([{k: to_tensor(v, executor.device) for k, v in batch.items()}
                                       for batch in batches], [pending[-1].outputs[0].name],
                                      {op.name for op in pending}, watch)

    _until_seen(ops, hook, run)


def _until_seen(ops: Sequence[Operation], hook: Callable, run: Callable) -> None:
    """``run(pending, watch)`` while some of ``ops`` were not seen by ``watch``, which passes them on to ``hook``."""
    seen: set[str] = set()

    def watch(op, inputs, outputs):
        seen.add(op.name)
        hook(op, inputs, outputs)

    pending = list(ops)
    while pending:
        run(pending, watch)
        pending = [op for op in pending if op.name not in seen]


def _run(executor: TorchExecutor, batches: Iterable[Batch], outputs: list[str], wanted: set[str], hook: Callable,
         quantize: bool) -> None:
    def watch(op, inputs, results):
        if op.name in wanted:
            hook(op, inputs, results)

    import torch

    from ...executor.feeds import to_tensor

    handle = executor.add_hook(watch)
    try:
        with executor.mode(quantize=quantize), torch.no_grad():
            for batch in batches:
                executor.forward_torch({k: to_tensor(v, executor.device) for k, v in batch.items()}, outputs)
    finally:
        handle.remove()
