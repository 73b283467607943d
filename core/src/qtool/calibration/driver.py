"""calibrate(): run the graph in float over the calibration data and set activation scales.

Every root activation config (its own dominator, role "activation", state
INITIAL, not passive, not dynamic) gets an observer named by its scheme. Configs
of one tensor with equal schemes share one observer, fed at the first place the
tensor appears (its producer's output, or its first reader for a graph input).
One pass over the data suffices: the histogram observers widen themselves exactly.

A tensor of routed weights (a Gather on axis 0 or a GatherND of a constant table of rank >= 3, a mixture of experts'
stacked expert matrices, maybe through ops that only move values: Transpose, Reshape...) is observed on the whole
table, once, and not on the data: calibration sees only the rows its data routed to, and an expert it rarely chose
would be clipped on data that chooses it (:func:`routed_table`). Rank-2 tables (embeddings) stay data-calibrated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import FeedError
from ..executor.errors import ExecutorError
from ..ir import Graph
from ..progress import progress_bar
from ..quant import TensorQuantizationConfig, configured
from ..quant.policy import QuantizationPolicy as P
from . import ort_engine
from .ahead import OneAhead
from .data import CalibrationData, load_calibration_data
from .errors import CalibrationError
from .observers import Observer, make_observer
from .provenance import feed_error, rows
from .threads import pass_threads


@dataclass
class _Target:
    """One observer and the configs it calibrates, fed at ``op``'s ``side`` number ``index``."""

    tensor: str
    op: str
    side: str
    index: int
    observer: Observer
    configs: list[TensorQuantizationConfig] = field(default_factory=list)
    table: str | None = None  # the constant table of routed weights it is observed on instead of the data


# ops whose output holds only values of their first input (moved, not computed): a routed table's rows stay so
_MOVING = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def routed_table(var) -> Any:
    """The constant table of rank >= 3 whose rows ``var`` holds as routing picked them (a Gather on axis 0 or a
    GatherND of it, then only ops in :data:`_MOVING`), else None: the variable of the table."""
    op = var.producer
    while op is not None and op.op_type in _MOVING and op.domain in ("", "ai.onnx"):
        var = op.inputs[0]
        op = None if var is None else var.producer
    if op is None or op.domain not in ("", "ai.onnx") or op.op_type not in ("Gather", "GatherND"):
        return None
    table = op.inputs[0] if op.inputs else None
    if table is None or not table.is_parameter or np.ndim(table.value) < 3:
        return None
    if op.op_type == "Gather" and op.attributes.get("axis", 0) not in (0, -np.ndim(table.value)):
        return None
    return table


def _is_root(tqc: TensorQuantizationConfig) -> bool:
    return (tqc.dominator is tqc and tqc.role == "activation" and tqc.is_planned and not tqc.is_settled
            and not tqc.is_passive and not tqc.scheme.policy & P.DYNAMIC)


def _targets(graph: Graph, options: Mapping[str, Any]) -> list[_Target]:
    """One observer per tensor and scheme of the configs that own their parameters; every place is looked at (a
    tensor's first reader in topological order may share the parameters of a later one's)."""
    targets: dict[tuple, _Target] = {}
    for op in graph.topological_order():
        for side, index, var, tqc in configured(op):
            if not _is_root(tqc):
                continue
            key = (var.name, tqc.scheme)
            if key not in targets:
                try:
                    observer = make_observer(tqc.scheme.observer, tqc.scheme, defaults=options)
                except CalibrationError as exc:
                    raise CalibrationError(f"tensor {var.name!r} at op {op.name!r}: {exc}") from exc
                table = routed_table(var)
                targets[key] = _Target(var.name, op.name, side, index, observer,
                                       table=None if table is None else table.name)
                if table is not None:  # once, here: the data's runs leave it alone
                    values = table.float_value if table.float_value is not None else table.value
                    observer.observe(np.asarray(values))
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


ENGINES = ("auto", "onnxruntime", "torch")


class FloatTap(Protocol):
    """A reader of calibration's float run besides the observers (:func:`calibrate`'s ``taps``; onnxruntime runs
    only: the executor's run feeds the observers alone). ``tensors`` are computed for it too, in the batches it
    ``wants``; ``batch`` tells it which batch the arrays it ``take``s next are of, and how many of its samples each
    onnxruntime run computes; ``finish`` ends the calibration: ``complete`` where onnxruntime's run went through,
    else (the executor ran, or nothing needed a run) it took nothing or part of what it wanted. ``cuts``: sample
    counts where a batch of samples is to end (the first samples it reads whole, as whole batches: a batch that
    holds them and more is cut there)."""

    tensors: Sequence[str]
    cuts: Sequence[int]

    def wants(self, first: int, count: int) -> bool:
        """Whether it reads the batch of samples ``first .. first + count - 1`` (once not, never again)."""

    def batch(self, first: int, count: int, feeds: Mapping[str, np.ndarray], run_samples: int) -> None: ...

    def take(self, name: str, array: np.ndarray) -> None: ...

    def finish(self, complete: bool) -> None: ...


def calibrate(graph: Graph, data, *, device: str = "cpu", progress: bool = True,
              options: Mapping[str, Any] | None = None, engine: str = "auto",
              taps: Sequence[FloatTap] = ()) -> dict[str, Any]:
    """Calibrate every root activation config of ``graph`` from ``data`` (ACTIVATED afterwards); the shapes the
    observed tensors had go to ``graph.observed_shapes``.

    ``data`` is a :class:`CalibrationData` or anything :func:`load_calibration_data`
    takes. ``options`` (e.g. ``{"percentile": 99.9, "bins": 2048}``) go to each
    observer that accepts them. ``engine`` runs the float model: ``"onnxruntime"``
    (:mod:`.ort_engine`), ``"torch"`` (the executor, on ``device``) or ``"auto"``
    (onnxruntime where it can stand in for the executor, else the executor); ``taps`` read the float tensors they
    name as the onnxruntime run goes (:class:`FloatTap`). Returns statistics: ``samples``,
    ``batches``, ``seconds``, ``engine`` (the one that ran, and ``engine_note`` why not onnxruntime; ``threads``, the
    intra-op threads onnxruntime ran it on), ``tensors`` and ``configs`` calibrated, ``observers`` (count per
    name), ``warnings`` (dicts naming the ``tensor``, with a ``message``) and ``tables`` (each ``tensor`` observed
    on the whole ``table`` of routed weights it gathers from, at ``op``: :func:`routed_table`).
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise CalibrationError(f"calibration engine {engine!r} is not one of {', '.join(ENGINES)}")
    data = data if isinstance(data, CalibrationData) else load_calibration_data(data, graph)
    targets = _targets(graph, options or {})
    stats: dict[str, Any] = {"samples": 0, "batches": 0, "seconds": 0.0, "engine": None, "tensors": len(targets),
                             "configs": sum(len(t.configs) for t in targets), "observers": {}, "warnings": [],
                             "tables": [{"tensor": t.tensor, "op": t.op, "table": t.table} for t in targets
                                        if t.table is not None]}
    if not targets:
        _finish_taps(taps, complete=False)
        return stats
    refused = ort_engine.refusal(graph, device) if engine != "torch" else "asked for"
    if refused is None:
        try:
            # the runs' thread ends with the block, also on an error
            with closing(_ort_runs(graph, data, _fed(targets), taps, stats)) as runs:
                _feed(progress, data, stats, runs)
            _finish_taps(taps, complete=True)
        except (*ort_engine.ORT_ERRORS, FeedError) as exc:  # onnxruntime refused the model or a feed (the error
            # names its file): the executor starts over
            if isinstance(exc, FeedError) and engine == "onnxruntime":
                raise
            refused = f"onnxruntime refused {exc}" if isinstance(exc, FeedError) else \
                f"onnxruntime refused it ({type(exc).__name__}: {str(exc).strip()[:200]})"
            targets = _targets(graph, options or {})
            stats.update(samples=0, batches=0)
            stats.pop("threads", None)
    if refused is not None:
        if engine == "onnxruntime":
            raise CalibrationError(f"calibration engine onnxruntime cannot run this model: {refused}")
        stats["engine_note"] = refused
        _finish_taps(taps, complete=False)
        _feed(progress, data, stats, _torch_runs(graph, data, _fed(targets), device))
    stats["engine"] = "torch" if refused else "onnxruntime"
    for target in targets:
        _finish(target, stats)
        if target.table is None and target.observer.shape is not None:
            graph.observed_shapes[target.tensor] = target.observer.shape
    stats["seconds"] = time.perf_counter() - start
    return stats


def _fed(targets: list[_Target]) -> list[_Target]:
    """The targets the data's runs feed (not those observed on a routed table)."""
    return [target for target in targets if target.table is None]


def _finish_taps(taps: Sequence[FloatTap], *, complete: bool) -> None:
    for tap in taps:
        tap.finish(complete)


def _feed(progress: bool, data: CalibrationData, stats: dict[str, Any], runs: Iterator[int]) -> None:
    """Drive ``runs`` (each yields the samples of one batch the observers took), counting and showing progress."""
    with progress_bar(progress, remaining=True) as bar:
        task = bar.add_task("calibrating", total=data.count)
        for count in runs:
            stats["samples"] += count
            stats["batches"] += 1
            bar.advance(task, count)


def _ort_runs(graph: Graph, data: CalibrationData, targets: list[_Target], taps: Sequence[FloatTap],
             stats: dict[str, Any]) -> Iterator[int]:
    """Feed the observers from onnxruntime runs; yields the samples of each batch done. The next run computes in a
    background thread while the observers take this one in (:class:`.ahead.OneAhead`), from the moment they have
    it (waiting until they had let go of a quarter of its bytes saved 15-35 MiB of peak on PP-OCRv4 det and rec but
    took 0.1-0.7 s more on them and on ResNet-50); so two runs' tensors are alive at most (runs of samples are
    small, :data:`.ort_engine.RUN_BYTES`; a sample or feed runs whole up to the budget: below it, its tensors would
    come in groups, each one more run of the graph; PP-OCRv4 det's 32 pages in one batch took 4.9 s in groups at
    half the budget, 3.3 s whole). The runs also return what the taps read, in the batches they want."""
    by_tensor: dict[str, list[_Target]] = {}
    for target in targets:
        by_tensor.setdefault(target.tensor, []).append(target)
    splittable = data.layout == "samples" and not data.fixed_batch  # a model that fixes its batch is run whole
    # heavy observers' thread takes one of the cores: onnxruntime the others (one core: they share it); light
    # ones (min/max) leave them all to onnxruntime
    tapped = [name for tap in taps for name in tap.tensors]
    spared = 1 if any(target.observer.heavy for target in targets) else 0
    engine = ort_engine.OrtFloatRun(graph, [*by_tensor, *tapped], threads=max(1, pass_threads() - spared))
    stats["threads"] = engine.session.get_session_options().intra_op_num_threads
    tapping: dict[str, list[FloatTap]] = {}  # the taps of the batch taken now, by tensor
    # the runs' thread ends with the block, also on an error
    with OneAhead(_float_pieces(engine, data, splittable, set(by_tensor), taps)) as pieces:
        for done, started, arrays in pieces:
            if done is not None:
                yield done
            if started is not None:  # the first piece of a batch: (its first sample, its samples, feeds, its taps)
                first, count, feeds, wanting = started
                run_samples = min(count, engine.rows) if splittable else count
                for tap in wanting:
                    tap.batch(first, count, feeds, run_samples)
                tapping = {name: [tap for tap in wanting if name in tap.tensors] for tap in wanting
                           for name in tap.tensors}
            pieces.ahead()
            for name in list(arrays):
                for target in by_tensor.get(name, ()):
                    target.observer.observe(arrays[name])
                for tap in tapping.get(name, ()):
                    tap.take(name, arrays[name])
                del arrays[name]  # each array goes as soon as its observers have it


def _float_pieces(engine: ort_engine.OrtFloatRun, data: CalibrationData, splittable: bool, observed: set[str],
                  taps: Sequence[FloatTap]) -> Iterator[tuple[int | None, tuple | None, dict]]:
    """Each piece of a batch that onnxruntime computes, after the samples of the batch that ended before it (None
    inside a batch); the first piece of a batch also brings the batch (its first sample, its samples, its feeds and
    the taps that want it), the others None. The last batch's samples come alone at the end. Every item but those
    holds a run (the batch's own inputs go with the next piece): while the observers take one in, the run of the
    next computes. Once no tap wants a tensor no observer reads, the runs return it no more."""
    inputs, done, first = set(engine.fed), None, 0
    cuts = sorted({n for tap in taps for n in tap.cuts}) if splittable else []
    for batch in _cut(data, cuts):
        count = data.samples_in(batch)
        wanting = [tap for tap in taps if tap.wants(first, count)]
        unread = {*engine.fed, *engine.computed} - observed - {name for tap in wanting for name in tap.tensors}
        if unread:
            engine.drop(unread)
        started, held = (first, count, batch, wanting), {}
        try:
            for arrays in engine.run(batch, splittable=splittable):
                if arrays.keys() <= inputs:
                    held = arrays
                    continue
                piece, held, arrays = {**held, **arrays}, {}, None  # the observers drop each array when done
                yield done, started, piece
                piece, done, started = None, None, None
        except ort_engine.ORT_ERRORS as exc:  # on this feed: its file named
            error = feed_error(batch, ort_engine.failure(exc), errors=ort_engine.ORT_ERRORS,
                               retry=lambda part: list(engine.run(part, splittable=splittable)),
                               describe=ort_engine.failure)
            if error is None:
                raise
            raise error from exc
        if held or started is not None:  # inputs alone are observed (or the batch brought nothing to observe)
            yield done, started, held
            done = None
        done = count
        first += count
    if done is not None:
        yield done, None, {}


def _cut(data: CalibrationData, cuts: Sequence[int]) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``data`` (samples along the first axis), each cut where one of ``cuts`` (sample counts) falls
    inside it, so that the first samples a tap wants whole end with a batch."""
    first = 0
    for batch in data:
        count = data.samples_in(batch)
        begin = first
        for cut in (c for c in cuts if first < c < first + count):
            yield rows(batch, begin - first, cut - first)
            begin = cut
        yield batch if begin == first else rows(batch, begin - first, count)
        first += count


def _torch_runs(graph: Graph, data: CalibrationData, targets: list[_Target], device: str) -> Iterator[int]:
    """Feed the observers from the torch executor's float runs, op by op; yields the samples of each batch done."""
    from ..executor import TorchExecutor  # the executor imports the op library; load it only when calibrating
    from ..executor.feeds import to_tensor

    executor = TorchExecutor(graph, device=device)
    executor.quantize = False
    sites: dict[str, list[_Target]] = {}
    for target in targets:
        sites.setdefault(target.op, []).append(target)

    def observe(op, inputs, outputs) -> None:
        for target in sites.get(op.name, ()):
            target.observer.observe((inputs if target.side == "input" else outputs)[target.index])

    outputs = [v.name for v in graph.outputs] + _extra_outputs(graph, set(sites))

    def run(batch) -> None:
        executor.forward_torch({k: to_tensor(a, executor.device) for k, a in batch.items()}, outputs)

    handle = executor.add_hook(observe)
    try:
        for batch in data:
            try:
                run(batch)
            except ExecutorError as exc:  # on this feed: its file named
                error = feed_error(batch, str(exc), retry=run, errors=(ExecutorError,))
                if error is None:
                    raise
                raise error from exc
            yield data.samples_in(batch)
    finally:
        handle.remove()


def _finish(target: _Target, stats: dict[str, Any]) -> None:
    observer = target.observer
    if not observer.observed:
        raise CalibrationError(f"tensor {target.tensor!r} ({target.side} {target.index} of op {target.op!r}) "
                               "held no finite value over the calibration data")
    mask = observer.mask()
    if mask is not None:  # quantized, the masked positions would come back as ordinary values
        reason = f"kept float by calibration: {mask}, a mask no integer grid holds"
        for tqc in target.configs:
            tqc.keep_float(reason)
        stats["warnings"].append({"tensor": target.tensor, "op": target.op, "observer": observer.name,
                                  "message": reason})
        return
    scale, offset = observer.compute()
    for tqc in target.configs:
        tqc.set_params(scale, offset)
    stats["observers"][observer.name] = stats["observers"].get(observer.name, 0) + 1
    for message in observer.diagnose(scale):
        stats["warnings"].append({"tensor": target.tensor, "op": target.op, "observer": observer.name,
                                  "message": message})
