"""calibrate(): run the graph in float over the calibration data and set activation scales.

Every root activation config (its own dominator, role "activation", state
INITIAL, not passive, not dynamic) gets an observer named by its scheme. Configs
of one tensor with equal schemes share one observer, fed at the first place the
tensor appears (its producer's output, or its first reader for a graph input).
One pass over the data suffices: the histogram observers widen themselves exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..ir import Graph
from ..quant import TensorQuantizationConfig
from ..quant.policy import QuantizationPolicy as P
from ..quant.tensors import quantized_tensors
from .data import CalibrationData, load_calibration_data
from .errors import CalibrationError
from .observers import Observer, make_observer
from .threads import one_thread


@dataclass
class _Target:
    """One observer and the configs it calibrates, fed at ``op``'s ``side`` number ``index``."""

    tensor: str
    op: str
    side: str
    index: int
    observer: Observer
    configs: list[TensorQuantizationConfig] = field(default_factory=list)


def _is_root(tqc: TensorQuantizationConfig) -> bool:
    return (tqc.dominator is tqc and tqc.role == "activation" and tqc.is_planned and not tqc.is_settled
            and not tqc.is_passive and not tqc.scheme.policy & P.DYNAMIC)


def _targets(graph: Graph, options: Mapping[str, Any]) -> list[_Target]:
    targets: dict[tuple, _Target] = {}
    for place in quantized_tensors(graph, roles=["activation"], settled=False):
        tqc = place.config
        if not _is_root(tqc):
            continue
        key = (place.tensor, tqc.scheme)
        if key not in targets:
            try:
                observer = make_observer(tqc.scheme.observer, tqc.scheme, defaults=options)
            except CalibrationError as exc:
                raise CalibrationError(f"tensor {place.tensor!r} at op {place.op.name!r}: {exc}") from exc
            targets[key] = _Target(place.tensor, place.op.name, place.side, place.index, observer)
        targets[key].configs.append(tqc)
    return list(targets.values())


def _extra_outputs(graph: Graph, ops: set[str]) -> list[str]:
    """An output of each op in ``ops`` that the graph outputs do not depend on, so that it runs too."""
    needed, pending = set(), [v.producer for v in graph.outputs if v.producer is not None]
    while pending:
        op = pending.pop()
        if op.name not in needed:
            needed.add(op.name)
            pending += [v.producer for v in op.inputs if v is not None and v.producer is not None]
    return [graph.operations[name].outputs[0].name for name in sorted(ops - needed)]


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not (enabled and console.is_terminal))


def calibrate(graph: Graph, data, *, device: str = "cpu", progress: bool = True,
              options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Calibrate every root activation config of ``graph`` from ``data`` (ACTIVATED afterwards).

    ``data`` is a :class:`CalibrationData` or anything :func:`load_calibration_data`
    takes. ``options`` (e.g. ``{"percentile": 99.9, "bins": 2048}``) go to each
    observer that accepts them. Returns statistics: ``samples``, ``batches``,
    ``seconds``, ``tensors`` and ``configs`` calibrated, ``observers`` (count per
    name) and ``warnings`` (dicts naming the ``tensor``, with a ``message``).
    """
    from ..executor import TorchExecutor  # the executor imports the op library; load it only when calibrating
    from ..executor.feeds import to_tensor

    start = time.perf_counter()
    data = data if isinstance(data, CalibrationData) else load_calibration_data(data, graph)
    targets = _targets(graph, options or {})
    stats: dict[str, Any] = {"samples": 0, "batches": 0, "seconds": 0.0, "tensors": len(targets),
                             "configs": sum(len(t.configs) for t in targets), "observers": {}, "warnings": []}
    if not targets:
        return stats
    executor = TorchExecutor(graph, device=device)
    executor.quantize = False
    sites: dict[str, list[_Target]] = {}
    for target in targets:
        sites.setdefault(target.op, []).append(target)

    def observe(op, inputs, outputs) -> None:
        if op.name not in sites:
            return
        with one_thread():
            for target in sites[op.name]:
                target.observer.observe((inputs if target.side == "input" else outputs)[target.index])

    outputs = [v.name for v in graph.outputs] + _extra_outputs(graph, set(sites))
    handle = executor.add_hook(observe)
    try:
        with _progress(progress) as bar:
            task = bar.add_task("calibrating", total=data.count)
            for batch in data:
                executor.forward_torch({k: to_tensor(a, executor.device) for k, a in batch.items()}, outputs)
                count = data.samples_in(batch)
                stats["samples"] += count
                stats["batches"] += 1
                bar.advance(task, count)
    finally:
        handle.remove()
    with one_thread():
        for target in targets:
            _finish(target, stats)
    stats["seconds"] = time.perf_counter() - start
    return stats


def _finish(target: _Target, stats: dict[str, Any]) -> None:
    observer = target.observer
    if not observer.observed:
        raise CalibrationError(f"tensor {target.tensor!r} ({target.side} {target.index} of op {target.op!r}) "
                               "held no finite value over the calibration data")
    scale, offset = observer.compute()
    for tqc in target.configs:
        tqc.set_params(scale, offset)
    stats["observers"][observer.name] = stats["observers"].get(observer.name, 0) + 1
    for message in observer.diagnose(scale):
        stats["warnings"].append({"tensor": target.tensor, "op": target.op, "observer": observer.name,
                                  "message": f"tensor {target.tensor!r}: {message}"})
