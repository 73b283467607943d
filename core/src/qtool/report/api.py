"""``qtool.analyse`` and ``qtool.explain``: the analysis and the dispatch explanation from Python."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..calibration import load_calibration_data
from ..calibration.threads import pass_threads, threads
from ..errors import QtoolError
from ..explanation import explain_document
from ..one_at_a_time import one_at_a_time
from ..pipeline import plan, quantize
from .results import AnalysisReport, Explanation

DEFAULT_SAMPLES = 16


@one_at_a_time
def analyse(model, platform, calib, *, config=None, preset: str | None = None,
            load_state: str | os.PathLike | None = None, samples: int = DEFAULT_SAMPLES, device: str = "cpu",
            agreement: bool = True, finished=None, announce=None, calib_layout: str | None = None,
            max_samples: int | None = None, transform=None, skip_nonfinite: bool = False) -> AnalysisReport:
    """Quantize ``model`` for ``platform`` (nothing written) and measure where the error comes from.

    The first ``samples`` samples of ``calib`` drive the measurements. ``agreement`` also exports to a
    temporary folder and compares the platform's runtime with the simulation. ``finished(run)`` is called
    after each pass and ``announce(message)`` before the measurements; ``calib_layout``, ``max_samples``,
    ``transform`` and ``skip_nonfinite`` read ``calib`` as :func:`qtool.quantize` reads it (its other keywords,
    which write files or choose the export, are no analysis's: it took them and wrote a state or a report).
    """
    _check_samples(samples)
    with tempfile.TemporaryDirectory(prefix="qtool-analyse-") as folder:
        output = Path(folder) / "model.onnx" if agreement and calib is not None else None
        result = quantize(model, platform, calib, config=config, preset=preset, device=device,
                          load_state=load_state, allow_unsupported=True, output=output, check_agreement=agreement,
                          progress=finished is not None, finished=finished, calib_layout=calib_layout,
                          max_samples=max_samples, transform=transform, skip_nonfinite=skip_nonfinite)
    return report_of(result, result.calibration, samples=samples, device=device, announce=announce)


@one_at_a_time
def report_of(result, calib, *, samples: int = DEFAULT_SAMPLES, device: str = "cpu",
              announce=None) -> AnalysisReport:
    """The analysis report of a :func:`qtool.quantize` result, measured on ``calib``'s first ``samples`` (fewer
    where the data holds fewer); ``announce(message)`` hears how many, before the measurements."""
    _check_samples(samples)
    if calib is None:
        raise QtoolError("the report measures the quantized model on calibration data: give calib "
                         "(a run restored with load_state has none of its own)")
    from .collect import collect  # the torch executor: once the inputs are checked

    data = load_calibration_data(calib, result.graph)
    batches = data.samples(samples)
    # the measurements are whole runs of the model per op: on the threads quantize's passes take, one where other
    # work fills the cores (more only wait on each other there: qtool.calibration.threads)
    with threads(pass_threads()):
        if announce is not None:
            kept = data.max_samples is not None and data.max_samples < samples
            why = f"--calib-samples {data.max_samples} keeps no more" if kept else "the calibration data holds no more"
            why += f", {data.skipped} sample(s) holding NaN skipped" if data.skipped else ""
            fewer = "" if len(batches) >= samples else f" (of {samples} asked: {why})"
            announce(f"measuring the error of each op on {len(batches)} samples{fewer}")
        return AnalysisReport(collect(result, batches, model=result.model, device=device))


def _check_samples(samples) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise QtoolError(f"samples (--samples) must be a whole number of at least 1, got {samples!r}")


@one_at_a_time
def explain(model, platform, *, config=None, preset: str | None = None) -> Explanation:
    """How each op of ``model`` would be quantized on ``platform`` (no calibration data needed)."""
    planned = plan(model, platform, config=config, preset=preset)
    document = explain_document(planned.graph, planned.platform.name, planned.config, planned.findings())
    name = str(model) if isinstance(model, str | os.PathLike) else planned.graph.info.graph_name
    return Explanation({**document, "model": name})
