"""How far the quantized model is from the float one, per graph output (SQNR and cosine).

The quantized side is the deployed model where it can run here (the exported files on the platform's runtime,
:class:`Deployed`), else qtool's simulation (the torch executor); the float side is ONNX Runtime's float run of the
graph where it can stand in for the executor: the graph outputs calibration's own onnxruntime run kept
(:class:`qtool.calibration.KeptOutputs`) where they are still that run's values, else a run of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..calibration.data import HELD_OUT_SAMPLES
from ..calibration.kept_outputs import KeptOutputs
from ..calibration.threads import pass_threads, threads
from ..ir import Graph
from ..platform import Diagnostic, Severity
from .metrics import ErrorAccumulator, is_floating, output_array

FLOAT_GAP_SAMPLES = HELD_OUT_SAMPLES  # those after max_samples a pass kept as it reached them
FAR_SNR_DB = 5.0  # an output whose quantization noise is more than a third of its signal: a broken model, not a
# sensitive one (the zoo's trained PP-OCRv4 recognizer, at 0.5 % below float's character accuracy, reads 10-13 dB)
SIMULATION = "qtool's simulation"


@dataclass(frozen=True)
class Deployed:
    """The exported files as the platform runs them: ``run(samples, names)`` gives the outputs ``names`` of each
    sample; ``runtime`` names what runs them (e.g. ``onnxruntime 1.20.0 (CPUExecutionProvider)``)."""

    runtime: str
    run: Callable[[list[dict], list[str]], list[list]]


def float_vs_quantized(graph: Graph, samples: Sequence[dict[str, np.ndarray]], device: str = "cpu",
                       *, held_out: bool = False, batchable: bool = False,
                       simulated: Sequence[Sequence[np.ndarray]] = (), deployed: Deployed | None = None,
                       kept: KeptOutputs | None = None) -> dict:
    """``{"samples", "held_out", "measured_on", "outputs": {name: {"sqnr_db", "cosine"}}}``, the float run as
    reference; an integer or boolean output (labels, indices) gets ``{"equal_share"}``: the share of its elements
    the quantized model gives as the float one does. A floating output whose shape differs from the float one's on
    some samples (the boxes a NonMaxSuppression keeps) is measured on the others, and ``shape_differs`` counts
    those samples (``sqnr_db`` and ``cosine`` None where it differs on all). An output empty on every sample in both
    models (a detector that kept no box) has nothing to compare: ``{"empty": True}``. Elements NaN or infinite in either
    model are left out (the float model's own NaN, a Sqrt of a negative, read as exact with cosine -1), and
    ``nonfinite_differs`` counts those that are so in one model only (a NaN the quantized model made).

    ``sqnr_db`` is None where the quantized output equals the float one exactly (infinite SQNR);
    ``held_out`` says whether ``samples`` were kept out of calibration. The quantized outputs come from
    ``deployed`` when given (``measured_on`` names its runtime), else from qtool's simulation: ``simulated`` then
    holds those of the first samples where they were already simulated (the agreement check's), and
    ``batchable`` says that the samples hold samples along their first axis, so that those left may be
    simulated in one batch where their shapes agree. ``kept``: the float outputs calibration kept, taken as the
    reference where the runs are the samples themselves and :meth:`KeptOutputs.reference` serves them.
    """
    names = [v.name for v in graph.outputs]
    if deployed is not None:
        runs = list(zip(samples, deployed.run(list(samples), names), strict=True))
    else:
        runs = [(sample, list(outputs)) for sample, outputs in zip(samples, simulated, strict=False)]
        runs += [(feeds, None) for feeds in _batched(samples[len(runs):], batchable)]
    from ..calibration.ort_engine import float_outputs  # several times faster than the executor on the CPU

    fed = [feeds for feeds, _ in runs]
    original = graph.float_reference or graph  # the float model, before a pass changed its function on purpose
    references = None if kept is None or len(fed) != len(samples) else kept.reference(original, fed, names)
    if references is None:
        references = float_outputs(original, fed, names, device, threads=pass_threads())
    executor = float_run = None
    if references is None or any(quantized is None for _, quantized in runs):
        from ..executor import TorchExecutor

        executor = TorchExecutor(graph, device=device)
        float_run = executor if original is graph else TorchExecutor(original, device=device)
    stats = {name: ErrorAccumulator() for name in names}
    matches = {name: [0, 0] for name in names}  # an integer or boolean output: (elements equal, elements)
    reshaped = dict.fromkeys(names, 0)  # a floating output: samples whose quantized shape is not the float one
    with threads(pass_threads()):  # on a busy machine: one thread, see threads
        for number, (feeds, quantized) in enumerate(runs):
            if references is None:
                with float_run.mode(quantize=False):
                    reference = float_run.forward(feeds, names)
            else:
                reference = [references[number][name] for name in names]
            if quantized is None:
                with executor.mode(quantize=True):
                    quantized = executor.forward(feeds, names)
            for name, ref, out in zip(names, reference, quantized, strict=True):
                ref, out = output_array(ref), output_array(out)
                if not is_floating(ref):  # labels, indices: elements the quantized model keeps
                    matches[name][0] += int(np.count_nonzero(ref == out)) if ref.shape == out.shape else 0
                    matches[name][1] += max(ref.size, out.size)
                elif ref.shape == out.shape:
                    stats[name].update(ref, out)
                else:
                    reshaped[name] += 1
    outputs = {name: output_entry(s) for name, s in stats.items() if s.count or s.nonfinite}
    outputs |= {name: {"sqnr_db": None, "cosine": None} for name, count in reshaped.items()
                if count and name not in outputs}
    for name, count in reshaped.items():
        if count:
            outputs[name]["shape_differs"] = count
    outputs |= {name: {"equal_share": round(equal / total, 6)} for name, (equal, total) in matches.items() if total}
    outputs = {name: outputs.get(name, {"empty": True}) for name in names}
    measured_on = SIMULATION if deployed is None else f"{deployed.runtime}, the exported files"
    return {"samples": len(samples), "held_out": held_out, "measured_on": measured_on, "outputs": outputs}


def _batched(samples: Sequence[dict[str, np.ndarray]], batchable: bool) -> list[dict[str, np.ndarray]]:
    """The samples joined along their first axis into one batch where allowed and their shapes agree (the sums
    compared are the same, in one executor run instead of one per sample); else as they are."""
    shapes = {tuple((name, a.shape) for name, a in sorted(sample.items())) for sample in samples}
    if not batchable or len(samples) < 2 or len(shapes) != 1:
        return list(samples)
    return [{name: np.concatenate([sample[name] for sample in samples]) for name in samples[0]}]


def float_gap(graph: Graph, data, device: str = "cpu", *, calibrated_on_data: bool = True,
              simulated: Sequence[Sequence[np.ndarray]] | None = None, deployed: Deployed | None = None,
              kept: KeptOutputs | None = None) -> dict:
    """Float vs quantized on samples calibration never saw (those after ``max_samples``) where the data holds
    some; otherwise on the first calibration samples, saying so (``held_out`` false). Calibration itself always
    reads the same samples: holding some out never changes what it computes. ``calibrated_on_data`` false (a
    state restored from a file, calibrated on data unknown) never claims samples were held out. ``deployed``: the
    exported files on the platform's runtime, measured instead of the simulation; ``simulated``: the simulated
    quantized outputs of the first samples (``data.samples``), already run by the agreement check; ``kept``: the
    graph outputs' float values calibration kept of them. ``from_state`` in the result: the calibration was a state
    file's (no sample was seen by this run's); ``unit``: what ``samples`` counts, "model call" in the feeds layout
    (each item one call, whatever it holds), else "sample"."""
    held_out = data.held_out(FLOAT_GAP_SAMPLES) if calibrated_on_data else []
    samples = held_out or data.samples(FLOAT_GAP_SAMPLES)
    batchable = data.layout == "samples" and not data.fixed_batch
    gap = float_vs_quantized(graph, samples, device, held_out=bool(held_out), batchable=batchable,
                             simulated=() if held_out or simulated is None else simulated, deployed=deployed,
                             kept=None if held_out else kept)
    return {**gap, "from_state": not calibrated_on_data, "unit": "model call" if data.layout == "feeds" else "sample"}


def sqnr_text(found: dict) -> str:
    """An output entry's SQNR as the summary says it: 'exact', 'undefined (...)' or 'N dB'."""
    if found.get("zero_signal"):
        return "undefined (the float output is 0 everywhere, the quantized one is not)"
    return "exact" if found.get("sqnr_db") is None else f"{found['sqnr_db']:.1f} dB"


def far_from_float(gap: dict) -> list[Diagnostic]:
    """A WARNING for each output of :func:`float_vs_quantized`'s measure below ``FAR_SNR_DB``, or with elements NaN
    or infinite in one model only (left out of its SQNR, a quantized Log of 0 among them)."""
    found_far = []
    for name, found in gap["outputs"].items():
        nonfinite = found.get("nonfinite_differs")
        low = found.get("zero_signal") or found.get("sqnr_db") is not None and found["sqnr_db"] < FAR_SNR_DB
        if not (low or nonfinite):
            continue
        measured = sqnr_text(found)
        where = f"{nonfinite} element(s) NaN or infinite in one model only, and elsewhere SQNR " if nonfinite \
            else "SQNR "
        found_far.append(Diagnostic(
            Severity.WARNING, "output.far-from-float",
            f"this output of the quantized model is far from the float model's: {where}{measured}, cosine "
            f"{found['cosine']:.3f} on {gap['samples']} samples ({gap['measured_on']}); `qtool analyse` finds the "
            "ops that lose most, `--check-agreement` compares the written files with qtool's simulation",
            tensor=name))
    return found_far


def budget_missed_held_out(gap: dict, budget_db: float | None) -> list[Diagnostic]:
    """A WARNING for each output whose held-out SQNR in :func:`float_vs_quantized`'s ``gap`` is below the SNR
    budget ``budget_db`` the sensitivity fallback met on the calibration samples."""
    if budget_db is None or not gap.get("held_out"):
        return []
    return [Diagnostic(Severity.WARNING, "fallback.held-out",
                       f"the sensitivity fallback's budget SNR >= {budget_db:.4g} dB, measured on the calibration "
                       f"samples, is missed on {gap['samples']} held-out samples: SQNR {found['sqnr_db']:.1f} dB "
                       "here; more (or more varied) calibration data, or a higher budget, would carry it over",
                       tensor=name)
            for name, found in gap["outputs"].items()
            if found.get("sqnr_db") is not None and found["sqnr_db"] < budget_db]


def output_entry(stats: ErrorAccumulator) -> dict:
    """One floating output's measure: ``sqnr_db`` (None where exact), ``cosine``, and where they apply
    ``zero_signal`` (the float output is 0 everywhere, the quantized one is not: no SQNR; it read as exact) and
    ``nonfinite_differs``."""
    entry = {"sqnr_db": _finite(stats.finite_snr_db), "cosine": stats.cosine}
    if stats.finite_snr_db == -math.inf:
        entry["zero_signal"] = True
    if stats.nonfinite:
        entry["nonfinite_differs"] = stats.nonfinite
    return entry


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None
