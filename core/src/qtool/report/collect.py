"""The report's document: everything the HTML page shows, as one JSON-able dict (schema version 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..analysis import ErrorAccumulator, json_number, jsonable, measure, output_error, quantized_ops
from ..executor import TorchExecutor
from ..explanation import explain_document
from ..passes.accuracy import AFTER_CALIBRATION, BEFORE_DISPATCH
from ..passes.accuracy.running import run_watching
from ..platform import Severity
from .distributions import ActivationHistograms, weight_ranges

# 2: an SQNR, cosine or MSE is never null; an infinite or undefined one is "Infinity", "-Infinity" or "NaN" (null
# read as exact where the error was infinite)
REPORT_SCHEMA_VERSION = 2
ACCURACY_PASSES = {cls.name for cls in (*BEFORE_DISPATCH.values(), *AFTER_CALIBRATION.values())}


def float_vs_quantized(executor: TorchExecutor, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
    """SQNR, cosine and MSE of each floating-point graph output, quantized run vs float run (of the float model
    before a pass changed the graph's float function on purpose: ``Graph.float_reference``)."""
    return _output_rows(output_error(executor, batches, _float_model(executor)))


def collect(result, batches: Sequence[Mapping[str, np.ndarray]], *, model: str, device: str = "cpu") -> dict:
    """The document of a quantization ``result`` (QuantizeResult) measured on ``batches``: the error measurements
    and the activation histograms come from one float run (with the layer-wise variants) and one simulated run of
    each batch (:func:`qtool.analysis.measure`)."""
    graph = result.graph
    executor = TorchExecutor(graph, device=device)
    order = {op.name: i for i, op in enumerate(quantized_ops(graph))}
    explained = explain_document(graph, result.summary["platform"], result.config)
    histograms = ActivationHistograms(graph)
    measured = measure(executor, batches, float_run=_float_model(executor), watch=histograms.observe)
    unseen = histograms.unseen_ops()
    if unseen:  # ops no graph output reads: the float run computing the outputs skipped them
        run_watching(executor, batches, unseen, histograms.observe, quantize=False)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": model,
        "platform": result.summary["platform"],
        "samples": len(batches),  # model calls (a feed holds several rows of a batch axis, or none)
        "config": {"description": result.config.describe(), "origins": dict(result.config.origins)},
        "coverage": result.summary["ops"],
        "outputs": _output_rows(measured.outputs),
        "agreement": jsonable(result.agreement),
        "diagnostics": {"counts": {s.value: sum(d.severity is s for d in result.diagnostics) for s in Severity},
                        "items": [d.as_dict() for d in result.diagnostics]},
        "graphwise": _in_order(measured.graphwise, order),
        "layerwise": _in_order(measured.layerwise, order),
        "layerwise_unmeasured": measured.layerwise_unmeasured,
        "activations": histograms.entries(),
        "weights": weight_ranges(graph),
        "dispatch": explained["ops"],
        "passes": [{"name": r.name, "seconds": round(r.seconds, 4), "modified": r.modified,
                    "accuracy": r.name in ACCURACY_PASSES, "details": jsonable(r.details)}
                   for r in result.pass_runs],
    }


def _float_model(executor: TorchExecutor) -> TorchExecutor | None:
    """An executor of the float model before a pass changed the graph's float function on purpose
    (``Graph.float_reference``), which the outputs are compared with; None where there is none."""
    original = executor.graph.float_reference
    return None if original is None else TorchExecutor(original, device=executor.device)


def _output_rows(outputs: Mapping[str, ErrorAccumulator]) -> list[dict]:
    return [{"output": name, **{key: json_number(getattr(s, key)) for key in ("snr_db", "cosine", "mse")}}
            for name, s in outputs.items()]


def _in_order(rows, order: Mapping[str, int]) -> list[dict]:
    """OpError rows in topological order, each with its position."""
    return [{"index": order[r.op], **r.as_dict()} for r in sorted(rows, key=lambda r: order[r.op])]
