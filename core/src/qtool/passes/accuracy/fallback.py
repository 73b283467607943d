"""SensitivityFallback: return the most sensitive quantized ops to float (or a wider format) until a budget holds.

The budget is one of: ``min_snr_db`` or ``min_cosine`` of the graph outputs
(simulated against float over calibration samples); ``max_gap_db``, how far the
output SNR may stay below the SNR with every candidate changed (returned to
float, or widened to ``precision``; measured first), which ``enough_snr_db`` caps (a model whose output SNR
already reaches it changes nothing); or a user ``metric`` (``metric(executor) ->
float``, higher is better) that may drop at most ``max_drop`` below its float
value (a drop past it by a few ulps of rounding meets it). Ops are ranked once by layer-wise sensitivity (the
output error with only that op quantized); the most sensitive ones are changed, as many as bisection over the
ranking finds (one simulated run per count tried, each trial undone): a count that meets the budget where one
fewer does not, the fewest where each op changed improves the score. An SNR or cosine budget on a graph without
floating-point output changes nothing and says it cannot be measured. Only ops that own
quantization parameters are candidates (a passive Reshape shares its input's).
With ``precision = {"activation_bits": 16}`` (and/or ``weight_bits``) an op is
widened instead of returned to float, and only ops with a narrower config of
that role are candidates (W4A8 with ``weight_bits = 8``: the 4-bit layers).
``op_types`` limits the candidates to those op types, ``outlier_ratio`` to
layers whose input's largest channel is at least that many times the median
channel (measured on the float graph, see :mod:`.outliers`); when no op is
left, nothing runs. ``max_share`` caps the ops changed at that share of the graph's compute ops
(Conv, ConvTranspose, Gemm, MatMul), rounded down (a share no op reaches changes nothing and runs nothing), and
``min_gain_db`` keeps a change only where it raises the output SNR by at least that much over the all-quantized
graph: the platform default's limits (a tenth, and 30 dB as enough), so that it returns an op to float only for a
measured gain on a model that needs one. Given the platform's ``runtime`` (the pipeline gives it), a pass with
``enough_snr_db`` first measures the output SNR of the graph as calibrated on that runtime (see
:mod:`.runtime_gate`, no torch): when it reaches ``enough_snr_db`` nothing is ranked, simulated or changed.
Runs after calibration, before AdaRound and BiasCorrection (which then work on
the ops still quantized).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...ir import Graph, Operation
from ...ops import is_compute
from ...quant.opconfig import FALLBACK_FLOAT
from ..base import Pass, PassResult, PassWarning
from .float_peaks import FloatPeaks
from .op_precision import can_widen, raise_precision, release_followers, return_to_float, trial
from .options import AccuracyError, check, number, positive_int

if TYPE_CHECKING:  # the simulation imports torch: only where the pass ranks or measures by simulation
    import torch

    from ...analysis import OutputsError
    from ...calibration import KeptOutputs
    from ...executor import TorchExecutor
    from ...platform_runtime import PlatformRuntime

WHERE = "accuracy.fallback"
DEFAULT_MIN_SNR_DB = 30.0
GAP_REFERENCE_CAP_DB = 80.0  # float32 rounding noise is ~140 dB down; 80 dB is float for any accuracy purpose
SHAPES_DIFFER = ("every floating-point graph output has another shape than the float model's on every batch, even "
                 "with every candidate changed (the boxes a NonMaxSuppression keeps)")
DROP_ULPS = 4  # a metric drop within this many ulps of the metric over max_drop meets it: 0.99 - 0.985 is
# 0.0050000000000000044 in binary floating point, a drop of 0.005 all the same


@dataclass(frozen=True)
class FallbackChange:
    """One op the fallback changed: returned to ``to == "float"``, or widened (``to`` lists the new schemes)."""

    op: str
    sensitivity_snr_db: float
    to: str | list[str]
    outlier_ratio: float | None = None


@dataclass(frozen=True)
class FallbackReport:
    """What :class:`SensitivityFallback` did (``PassRun.report``): the budget, the score before and after, the ops
    that followed the changed ones to float (``released``: fused activations, residual Adds, passive ops quantized
    only between them), and the output SNR measured on the platform's runtime where it was (``runtime_snr_db``, on
    ``runtime``; before any change, for ``enough_snr_db``), and after the changes (``after_runtime_db``; a metric
    budget's drop there, ``after_runtime_drop``): a budget the simulation meets but the runtime does not is not
    met."""

    budget: str
    before: float | None
    after: float | None
    met: bool
    candidates: int
    changed: tuple[FallbackChange, ...]
    released: tuple[str, ...] = ()
    runtime_snr_db: float | None = None
    runtime: str | None = None
    after_runtime_db: float | None = None  # the output SNR of the changed graph on ``runtime``, where measured
    after_runtime_drop: float | None = None  # a metric budget's drop from float of the changed graph on ``runtime``

    @classmethod
    def from_details(cls, details: dict) -> FallbackReport:
        changed = tuple(FallbackChange(**change) for change in details["changed"])
        return cls(details["budget"], details["before"], details["after"], details["met"], details["candidates"],
                   changed, tuple(details.get("released", ())), details.get("runtime_snr_db"), details.get("runtime"),
                   details.get("after_runtime_db"), details.get("after_runtime_drop"))


def changeable_ops(graph: Graph, max_ops: int | None, max_share: float | None) -> int | None:
    """The most ops the fallback may change on ``graph``: ``max_ops``, and ``max_share`` of its compute ops (rounded
    down); None: no limit."""
    limits = [] if max_ops is None else [max_ops]
    if max_share is not None:
        limits.append(math.floor(max_share * sum(1 for op in graph.operations.values() if is_compute(op))))
    return min(limits) if limits else None


class SensitivityFallback(Pass):
    """Options: one budget (``min_snr_db``, ``min_cosine``, ``max_gap_db`` with a ``precision`` table, or
    ``metric`` with ``max_drop``), ``precision`` ("float" or ``{"activation_bits": n, "weight_bits": n}``),
    ``op_types``, ``outlier_ratio``, ``max_ops``, ``max_share``, ``min_gain_db``, ``enough_snr_db``,
    ``samples``; ``runtime`` (not an option: the pipeline's :class:`~qtool.platform_runtime.PlatformRuntime`)
    measures ``enough_snr_db`` on the platform's runtime first, against the float outputs calibration's run kept
    (``kept_outputs``, :class:`~qtool.calibration.KeptOutputs`) where they still hold."""

    name = "SensitivityFallback"

    def __init__(self, data, *, min_snr_db: float | None = None, min_cosine: float | None = None,
                 max_gap_db: float | None = None, metric: Callable[[TorchExecutor], float] | None = None,
                 max_drop: float | None = None, precision: str | Mapping[str, int] = "float",
                 op_types: Sequence[str] | None = None, outlier_ratio: float | None = None,
                 max_ops: int | None = None, max_share: float | None = None, min_gain_db: float | None = None,
                 enough_snr_db: float | None = None, samples: int = 64, device: str = "cpu",
                 progress: bool = False, runtime: PlatformRuntime | None = None,
                 float_peaks: FloatPeaks | None = None, kept_outputs: KeptOutputs | None = None) -> None:
        check(data is not None, WHERE, "data", "SensitivityFallback needs calibration data")
        chosen = [k for k, v in (("min_snr_db", min_snr_db), ("min_cosine", min_cosine), ("max_gap_db", max_gap_db),
                                 ("metric", metric)) if v is not None]
        check(len(chosen) <= 1, WHERE, chosen[-1] if chosen else "", f"give one budget, got {', '.join(chosen)}")
        self.data, self.device, self.progress, self.runtime = data, device, progress, runtime
        self.kept_outputs = kept_outputs
        self.samples = positive_int(WHERE, "samples", samples)
        self.max_ops = None if max_ops is None else positive_int(WHERE, "max_ops", max_ops)
        self.max_share = None if max_share is None else number(WHERE, "max_share", max_share, 0.0, 1.0)
        self.min_gain_db = None if min_gain_db is None else number(WHERE, "min_gain_db", min_gain_db, 0.0, math.inf)
        self.enough_snr_db = None if enough_snr_db is None else number(WHERE, "enough_snr_db", enough_snr_db,
                                                                       -math.inf, math.inf)
        self.bits = _precision(precision)
        self.op_types = _op_types(op_types)
        self.outlier_ratio = None if outlier_ratio is None else number(WHERE, "outlier_ratio", outlier_ratio, 1.0,
                                                                       math.inf)
        self.float_peaks = float_peaks or FloatPeaks(data, device)
        if self.outlier_ratio is not None:
            self.float_peaks.add_reader(self.samples, self._prospective)
        self.metric, self.max_drop = metric, None
        if metric is not None:
            check_metric(metric)
            check(max_drop is not None, WHERE, "max_drop", "a metric budget needs max_drop")
            self.max_drop = number(WHERE, "max_drop", max_drop, 0.0, math.inf)
            self.budget = ("metric", self.max_drop)
        elif min_cosine is not None:
            self.budget = ("cosine", number(WHERE, "min_cosine", min_cosine, -1.0, 1.0))
        elif max_gap_db is not None:
            self.budget = ("gap_db", number(WHERE, "max_gap_db", max_gap_db, 0.0, math.inf))
        else:
            snr = DEFAULT_MIN_SNR_DB if min_snr_db is None else min_snr_db
            # below 0 dB the noise outweighs the signal (any output meets it); inf: no quantized op ever does
            check(isinstance(snr, int | float) and not isinstance(snr, bool) and math.isfinite(snr) and snr >= 0,
                  WHERE, "min_snr_db", f"an SNR budget is a finite number of dB, at least 0, got {snr!r}")
            self.budget = ("snr_db", float(snr))
        check(max_drop is None or metric is not None, WHERE, "max_drop", "applies to a metric budget only")
        check(min_gain_db is None or self.budget[0] in ("snr_db", "gap_db"), WHERE, "min_gain_db",
              "applies to an SNR budget only (min_snr_db or max_gap_db)")
        check(enough_snr_db is None or self.budget[0] == "gap_db", WHERE, "enough_snr_db",
              "applies to a max_gap_db budget only")

    def call(self, graph: Graph) -> PassResult:
        details: dict = {}
        limit = self._limit_ops(graph)
        if limit == 0:  # the share allows no op on a model this small: nothing to rank or measure
            return _unchanged(graph, details, "none (max_share allows no op of a model this small)", max_ops=0)
        from .running import take_samples

        batches = take_samples(graph, self.data, self.samples)
        candidates = [op for op in graph.topological_order() if self._candidate(op)]
        if self.outlier_ratio is not None and candidates:  # onnxruntime's float run: no torch where it runs the graph
            from .outliers import input_axes, ratios_of

            peaks = self.float_peaks.peaks(graph, self.samples, input_axes(candidates), reader=self._prospective)
            ratios = ratios_of(candidates, peaks)
            candidates = [op for op in candidates if ratios.get(op.name, 0.0) >= self.outlier_ratio]
            details["outlier_ratios"] = {op.name: ratios[op.name] for op in candidates}
        if not candidates and (self.op_types is not None or self.outlier_ratio is not None):
            return self._no_candidate(graph, details)
        if candidates and self._enough_on_runtime(graph, details):
            measured = details["runtime_snr_db"]
            return _unchanged(graph, details, f"none (output SNR {measured:.4g} dB measured on {self.runtime.name} "
                                              f">= enough_snr_db {self.enough_snr_db:g})", before=measured)
        return self._simulated(graph, batches, candidates, limit, details)

    def _no_candidate(self, graph: Graph, details: dict) -> PassResult:
        if self.outlier_ratio is not None:
            details.setdefault("outlier_ratios", {})
        return _unchanged(graph, details, "none (no candidate op)")

    def _simulated(self, graph: Graph, batches, candidates: list[Operation], limit: int | None,
                   details: dict) -> PassResult:
        """Rank ``candidates`` and change the fewest that meet the budget, measured by simulation (torch)."""
        from ...analysis import layerwise_sensitivity
        from ...executor import TorchExecutor

        executor = TorchExecutor(graph, self.device)
        measured = self._measure(executor, batches)
        if isinstance(measured, str):
            return self._unmeasurable(graph, details, measured)
        measure, slack, baseline = measured
        if self.budget[0] == "gap_db":
            details["widened_snr_db"] = self._score_with(executor, candidates, measure)
            if math.isnan(details["widened_snr_db"]):  # the budget would read 'SNR >= nan dB'
                return self._unmeasurable(graph, details, SHAPES_DIFFER)
        kind, bound = self._limit(details.get("widened_snr_db"))
        holds = (lambda value: value <= bound + slack) if kind == "metric" else (lambda value: value >= bound)
        before = score = measure()
        changed: list[dict] = []
        tried: dict[int, float] = {0: before}
        if limit is not None:
            details["max_ops"] = limit
        if not holds(score):
            ranking = layerwise_sensitivity(executor, batches, candidates)[: limit]
            ops = [graph.operations[row.op] for row in ranking]
            if len(ops) == len(candidates) and "widened_snr_db" in details:
                tried[len(ops)] = details["widened_snr_db"]
            count = self._fewest(executor, ops, measure, holds, tried)
            if self.min_gain_db is not None and tried[count] - before < self.min_gain_db:
                count = 0  # no measured gain worth a float op
            why = details.get("outlier_ratios", {})
            changed = [self._change(graph, op, row.snr_db, why.get(op.name))
                       for op, row in zip(ops[:count], ranking, strict=False)]
            details["released"] = self._release(graph)
            executor.refresh()
            score = tried[count]
        met = holds(score)
        text = _budget_text(kind, bound)
        if not met and self.max_share is None:  # the share limit is the default's, which may stop short on purpose
            warnings.warn(PassWarning(f"sensitivity fallback: the budget {text} does not hold "
                                      f"({kind} {score:.4g}) after changing {len(changed)} op(s)",
                                      code="fallback-budget"), stacklevel=2)
        elif met and changed and kind == "snr_db" and self.runtime is not None:
            met = self._holds_on_runtime(graph, details, text, score, bound)
        elif met and changed and kind == "metric" and self.runtime is not None:
            met = self._metric_holds_on_runtime(graph, details, text, score, bound + slack, baseline)
        details.update(budget=text, before=before, after=score, met=met, candidates=len(candidates),
                       tried={k: tried[k] for k in sorted(tried)}, changed=changed)
        if kind == "snr_db":  # the summary's held-out measure is checked against it
            details["snr_budget_db"] = bound
        return PassResult(graph, bool(changed), details, FallbackReport.from_details(details))

    def _unmeasurable(self, graph: Graph, details: dict, why: str) -> PassResult:
        """An SNR or cosine budget on a graph without a floating-point output element to compare (``why``):
        nothing changed, not met."""
        kind, value = self.budget
        text = f"an SNR gap <= {value:g} dB" if kind == "gap_db" else _budget_text(kind, value)
        why = f"{text} cannot be measured: {why}"
        warnings.warn(PassWarning(f"sensitivity fallback: {why}; nothing changed", code="fallback-budget"),
                      stacklevel=3)
        return _unchanged(graph, details, f"none ({why})", met=False)

    def _holds_on_runtime(self, graph: Graph, details: dict, text: str, score: float, bound: float) -> bool:
        """Whether the changed graph, as the platform's runtime runs it, still meets the SNR ``bound`` the simulation
        met (ONNX Runtime quantized the weight of an op returned to float itself: 30.9 dB simulated, 24.5 run);
        True where it cannot be measured there."""
        measured, details["runtime"] = self._runtime_snr(graph)
        details["after_runtime_db"] = measured
        if measured is None or measured >= bound:
            return True
        _missed_on_runtime(text, f"{score:.4g} dB", f"{measured:.4g} dB", details["runtime"])
        return False

    def _metric_holds_on_runtime(self, graph: Graph, details: dict, text: str, drop: float, bound: float,
                                 baseline: float) -> bool:
        """Whether the changed graph, as the platform's runtime runs it, keeps the metric's drop from its float
        value within ``bound`` as the simulation did: the metric is called with an executor whose ``forward`` runs
        the exported graph there (top-1 met at 0.95 simulated read 0.9375 on ONNX Runtime, without a word); True
        where it cannot be measured there (``details["runtime"]`` says why)."""
        from ...platform import RuntimeUnavailable

        try:
            with self.runtime.exported(graph) as run:
                value = metric_value(self.metric, RuntimeForward(graph, run))
            details["runtime"] = self.runtime.name
        except RuntimeUnavailable as exc:
            details["runtime"] = str(exc)
            return True
        except AccuracyError as exc:  # a metric that needs more than forward(): measured in simulation only
            details["runtime"] = f"not measured: {exc}"
            return True
        details["after_runtime_drop"] = baseline - value
        if baseline - value <= bound:
            return True
        _missed_on_runtime(text, f"drop {drop:.4g}", f"drop {baseline - value:.4g}", details["runtime"])
        return False

    def _enough_on_runtime(self, graph: Graph, details: dict) -> bool:
        """Whether the output SNR measured on the platform's runtime reaches ``enough_snr_db`` (False where there is
        no such budget, no runtime, or it cannot measure this graph); ``details`` get the measurement or why not.
        It measures the first samples the run's summary measures (float_gap's, at most ``samples``): the summary
        then reads this run where the written model is the one measured here."""
        if self.enough_snr_db is None or self.runtime is None:
            return False
        details["runtime_snr_db"], details["runtime"] = self._runtime_snr(graph)
        return details["runtime_snr_db"] is not None and details["runtime_snr_db"] >= self.enough_snr_db

    def _runtime_snr(self, graph: Graph) -> tuple[float | None, str]:
        """The output SNR of ``graph`` as the platform's runtime runs it, on the first samples the run's summary
        measures (float_gap's, at most ``samples``), and the runtime's name (or why it was not measured)."""
        from ...analysis.float_gap import FLOAT_GAP_SAMPLES
        from ...calibration import load_calibration_data
        from .running import take_samples
        from .runtime_gate import runtime_snr_db

        batches = take_samples(graph, self.data, min(self.samples, FLOAT_GAP_SAMPLES))

        def kept(names: list[str]):
            if self.kept_outputs is None:
                return None
            samples_in = load_calibration_data(self.data, graph).samples_in
            return self.kept_outputs.batch_reference(graph, batches, names, samples_in)

        return runtime_snr_db(graph, batches, self.runtime, kept)

    def _fewest(self, executor: TorchExecutor, ops: list[Operation], measure, holds, tried: dict[int, float]) -> int:
        """The fewest of ``ops`` (a prefix, most sensitive first) whose change meets the budget, by bisection
        (every op when none does); ``tried`` gets the score of each prefix length measured."""

        def score(count: int) -> float:
            if count not in tried:
                tried[count] = self._score_with(executor, ops[:count], measure)
            return tried[count]

        from ...progress import progress_bar

        low, high = 0, len(ops)  # the budget fails with none changed
        if not holds(score(high)):
            return high
        with progress_bar(self.progress) as bar:
            task = bar.add_task("sensitivity fallback", total=max(1, math.ceil(math.log2(max(high, 1)))))
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if holds(score(middle)) else (middle, high)
                bar.advance(task)
        return high

    def _score_with(self, executor: TorchExecutor, ops: list[Operation], measure) -> float:
        """The budget's score with ``ops`` changed, undone afterwards."""
        graph = executor.graph
        try:
            with trial(graph):
                for op in ops:
                    self._change(graph, op, math.nan, None)
                self._release(graph)
                executor.refresh()
                return measure()
        finally:
            executor.refresh()

    def _limit_ops(self, graph: Graph) -> int | None:
        return changeable_ops(graph, self.max_ops, self.max_share)

    def _limit(self, widened_snr_db: float | None) -> tuple[str, float]:
        """The measured quantity (snr_db, cosine or metric drop) and its limit. A gap is counted from at most
        GAP_REFERENCE_CAP_DB: with every candidate float the SNR can be infinite, which no fewer ops reach."""
        kind, value = self.budget
        if kind == "gap_db":
            bound = min(widened_snr_db, GAP_REFERENCE_CAP_DB) - value
            return "snr_db", bound if self.enough_snr_db is None else min(bound, self.enough_snr_db)
        return kind, value

    def _prospective(self, graph: Graph) -> dict[str, int]:
        """The inputs the outlier scan may ask peaks of, before quantization is decided: those of ``op_types``."""
        from .outliers import input_axes

        return input_axes([op for op in graph.operations.values()
                           if self.op_types is None or op.op_type in self.op_types])

    def _candidate(self, op: Operation) -> bool:
        """A quantized op that owns parameters and that the change would affect."""
        if op.quant is None or not op.quant.quantized or not _owns_parameters(op):
            return False
        if self.op_types is not None and op.op_type not in self.op_types:
            return False
        return self.bits is None or can_widen(op, self.bits)

    def _release(self, graph: Graph) -> list[str]:
        """Ops quantized only beside ops now float (a fused activation, a residual Add) follow them to float."""
        if self.bits is not None:  # widened ops stay quantized: their neighbours keep their company
            return []
        return release_followers(graph, f"{FALLBACK_FLOAT} with the ops around it")

    def _change(self, graph: Graph, op: Operation, snr_db: float, outlier: float | None) -> dict:
        """Return ``op`` to float or widen it; ``outlier`` (its input's outlier ratio) goes into the reason."""
        why = f"SNR {snr_db:.1f} dB" + ("" if outlier is None else f", input channel outlier {outlier:.3g}x median")
        entry = {"op": op.name, "sensitivity_snr_db": snr_db}
        if outlier is not None:
            entry["outlier_ratio"] = outlier
        if self.bits is None:
            return_to_float(graph, op, f"{FALLBACK_FLOAT} ({why})")
            return {**entry, "to": "float"}
        wanted = ", ".join(f"{role} {bits} bits" for role, bits in self.bits.items())
        widened = raise_precision(graph, op, self.bits, f"widened to {wanted} by sensitivity fallback ({why})")
        return {**entry, "to": widened}

    def _measure(self, executor: TorchExecutor, batches) -> tuple[Callable[[], float], float, float | None] | str:
        """A function scoring the simulated graph (output SNR, cosine, or the metric's drop from float), the
        rounding a score may carry past the budget (a metric drop's ``DROP_ULPS``) and the metric's float value
        (None for the others); for an SNR or cosine budget on a graph without a floating-point output element to
        compare, why not (an output empty on every sample scored as exact: nothing changed, budget met)."""
        kind = self.budget[0]
        if kind == "metric":
            with executor.mode(quantize=False):
                baseline = metric_value(self.metric, executor)
            slack = DROP_ULPS * math.ulp(max(abs(baseline), self.max_drop))
            return (lambda: baseline - metric_value(self.metric, executor)), slack, baseline
        references = _float_outputs(executor, batches)
        if not any(references):
            return "every graph output is integer or boolean"
        if not any(t.numel() for reference in references for t in reference.values()):
            return "no floating-point graph output holds an element on these samples (every one empty: a detector " \
                   "that kept no box)"

        def score() -> float:
            stats = _output_error(executor, batches, references)
            return stats.cosine if kind == "cosine" else stats.snr_db

        return score, 0.0, None


def _missed_on_runtime(budget: str, simulated: str, measured: str, runtime: str) -> None:
    warnings.warn(PassWarning(f"sensitivity fallback: the budget {budget} holds in qtool's simulation ({simulated}) "
                              f"but not in the model as {runtime} runs it ({measured}); its warnings say which ops it "
                              "runs otherwise", code="fallback-budget"), stacklevel=4)


class RuntimeForward:
    """What a metric reads of an executor, run by the platform's runtime: ``graph`` and ``forward(inputs,
    output_names)`` (numpy in, numpy out); ``run`` is :meth:`qtool.platform_runtime.PlatformRuntime.exported`'s."""

    def __init__(self, graph: Graph, run) -> None:
        self.graph, self._run = graph, run

    def forward(self, inputs: Sequence | Mapping, output_names: Sequence[str] | None = None) -> list:
        from ...executor.feeds import numpy_feeds

        names = list(output_names) if output_names is not None else [v.name for v in self.graph.outputs]
        (outputs,) = self._run([numpy_feeds(inputs, self.graph.inputs)], names)
        return list(outputs)

    def forward_torch(self, feeds, output_names=None):
        raise AccuracyError("the metric calls forward_torch(), which the platform's runtime does not run "
                            "(forward() takes numpy inputs)")


def check_metric(metric) -> None:
    """A metric budget's function can be called as ``metric(executor)``: callable, and where Python knows its
    parameters, with one positional argument (a function of other arguments failed only once calibration was done)."""
    check(callable(metric), WHERE, "metric", f"must be callable as metric(executor) -> float, got {metric!r}")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):  # a builtin without a signature: its first call (metric_value) tells
        return
    try:
        signature.bind(None)
    except TypeError:
        raise AccuracyError(f"{WHERE}.metric: {_metric_name(metric)} takes {signature}: it is called as "
                            "metric(executor) -> float, with one argument") from None


def metric_value(metric: Callable, executor: TorchExecutor) -> float:
    """``metric(executor)`` on the executor as it is set; an error it raises, or a value that is no finite number,
    an :class:`AccuracyError` naming the metric."""
    try:
        value = metric(executor)
    except Exception as exc:  # noqa: BLE001 - the user's function: its error, named with it, in one line
        detail = " ".join(str(exc).split())
        raise AccuracyError(f"{WHERE}.metric: {_metric_name(metric)} raised {type(exc).__name__}"
                            + (f": {detail}" if detail else "")) from exc
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    check(math.isfinite(number), WHERE, "metric", f"{_metric_name(metric)} returned {value!r}, "
          "not a finite number (higher is better)")
    return number


def try_metric(metric: Callable, graph: Graph, device: str = "cpu") -> float:
    """:func:`metric_value` on the float ``graph`` (the model as loaded, before any pass or data): the call the
    fallback makes first for its float baseline, made before calibration, so that a metric that raises or returns
    no finite number stops the run before the long work. It costs one evaluation of the metric more (its value is
    not the baseline: the passes before the fallback may change the float graph's rounding)."""
    from ...executor import TorchExecutor

    executor = TorchExecutor(graph, device)
    with executor.mode(quantize=False):
        return metric_value(metric, executor)


def _unchanged(graph: Graph, details: dict, budget: str, *, before: float | None = None, met: bool = True,
               **more) -> PassResult:
    """The result of a run that returned before ranking: nothing changed, ``budget`` says why."""
    details.update(budget=budget, before=before, after=before, met=met, candidates=0, **more, tried={}, changed=[])
    return PassResult(graph, False, details, FallbackReport.from_details(details))


def _budget_text(kind: str, limit: float) -> str:
    return {"metric": f"metric drop <= {limit:g}", "cosine": f"cosine >= {limit:g}",
            "snr_db": f"SNR >= {limit:.4g} dB"}[kind]


def _metric_name(metric: Callable) -> str:
    """The metric function as errors name it: FILE.py:FUNCTION, as --metric names it."""
    name = getattr(metric, "__qualname__", None) or repr(metric)
    code = getattr(metric, "__code__", None)
    return f"{code.co_filename}:{name}" if code is not None else name


def _op_types(op_types) -> frozenset[str] | None:
    if op_types is None:
        return None
    check(isinstance(op_types, Sequence) and not isinstance(op_types, str) and op_types
          and all(isinstance(t, str) and t for t in op_types), WHERE, "op_types",
          f"must be a non-empty list of op type names, got {op_types!r}")
    return frozenset(op_types)


def _precision(precision) -> dict[str, int] | None:
    if precision == "float":
        return None
    check(isinstance(precision, Mapping) and precision, WHERE, "precision",
          f"must be \"float\" or a table of activation_bits / weight_bits, got {precision!r}")
    bits = {}
    for key, value in precision.items():
        check(key in ("activation_bits", "weight_bits"), WHERE, f"precision.{key}",
              "unknown key (known: activation_bits, weight_bits)")
        check(isinstance(value, int) and 2 <= value <= 16, WHERE, f"precision.{key}",
              f"must be an integer in [2, 16], got {value!r}")
        bits[key.removesuffix("_bits")] = value
    return bits


def _owns_parameters(op: Operation) -> bool:
    return any(t.dominator is t and t.is_settled for t in op.quant.all_configs())


def _forward(executor: TorchExecutor, batch, *, quantize: bool) -> dict[str, torch.Tensor]:
    """The graph's floating-point outputs for one batch, float or simulated."""
    import torch

    from ...executor.feeds import output_tensor, to_tensor

    with executor.mode(quantize=quantize), torch.no_grad():
        outputs = executor.forward_torch({k: to_tensor(v, executor.device) for k, v in batch.items()})
    tensors = {name: output_tensor(value) for name, value in outputs.items()}  # a ZipMap's maps: their values
    return {name: tensor for name, tensor in tensors.items() if tensor.is_floating_point()}


def _float_outputs(executor: TorchExecutor, batches) -> list[dict[str, torch.Tensor]]:
    """The float graph's outputs per batch: the reference every trial is scored against (computed once, by
    onnxruntime where it can run the graph)."""
    from .running import ort_float_values

    names = [v.name for v in executor.graph.outputs]
    values = ort_float_values(executor, batches, names)
    if values is None:
        return [_forward(executor, batch, quantize=False) for batch in batches]
    references: list[dict[str, torch.Tensor]] = [{} for _ in batches]
    for index, arrays in values:
        references[index].update({name: t for name, t in arrays.items() if t.is_floating_point()})
    return references


def _output_error(executor: TorchExecutor, batches, references) -> OutputsError:
    """Graph outputs simulated vs ``references`` (the float outputs), over ``batches``: the worst output's."""
    from ...analysis import OutputsError

    stats = OutputsError()
    for batch, reference in zip(batches, references, strict=True):
        stats.update(reference, _forward(executor, batch, quantize=True))
    return stats
