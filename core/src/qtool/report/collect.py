"""The report's document: everything the HTML page shows, as one JSON-able dict (schema version 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..analysis import NoFloatOutputError, graphwise_error, layerwise_sensitivity, output_error, quantized_ops
from ..executor import TorchExecutor
from ..explanation import explain_document
from ..passes.accuracy import AFTER_CALIBRATION, BEFORE_DISPATCH
from ..platform import Severity
from .distributions import activation_histograms, weight_ranges

REPORT_SCHEMA_VERSION = 1
ACCURACY_PASSES = {cls.name for cls in (*BEFORE_DISPATCH.values(), *AFTER_CALIBRATION.values())}


def float_vs_quantized(executor: TorchExecutor, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
    """SQNR, cosine and MSE of each floating-point graph output, quantized run vs float run (of the float model
    before a pass changed the graph's float function on purpose: ``Graph.float_reference``)."""
    original = executor.graph.float_reference
    float_run = None if original is None else TorchExecutor(original, device=executor.device)
    return [{"output": name, "snr_db": finite(s.snr_db), "cosine": finite(s.cosine), "mse": finite(s.mse)}
            for name, s in output_error(executor, batches, float_run).items()]


def collect(result, batches: Sequence[Mapping[str, np.ndarray]], *, model: str, device: str = "cpu") -> dict:
    """The document of a quantization ``result`` (QuantizeResult) measured on ``batches``."""
    graph = result.graph
    executor = TorchExecutor(graph, device=device)
    order = {op.name: i for i, op in enumerate(quantized_ops(graph))}
    explained = explain_document(graph, result.summary["platform"], result.config)
    layerwise, unmeasured = _layerwise(executor, batches, order)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": model,
        "platform": result.summary["platform"],
        "samples": sum(len(next(iter(b.values()))) for b in batches),
        "config": {"description": result.config.describe(), "origins": dict(result.config.origins)},
        "coverage": result.summary["ops"],
        "outputs": float_vs_quantized(executor, batches),
        "agreement": sanitize(result.agreement),
        "diagnostics": {"counts": {s.value: sum(d.severity is s for d in result.diagnostics) for s in Severity},
                        "items": [d.as_dict() for d in result.diagnostics]},
        "graphwise": _in_order(graphwise_error(executor, batches), order),
        "layerwise": layerwise,
        "layerwise_unmeasured": unmeasured,
        "activations": activation_histograms(graph, batches, device),
        "weights": weight_ranges(graph),
        "dispatch": explained["ops"],
        "passes": [{"name": r.name, "seconds": round(r.seconds, 4), "modified": r.modified,
                    "accuracy": r.name in ACCURACY_PASSES, "details": sanitize(r.details)}
                   for r in result.pass_runs],
    }


def _layerwise(executor: TorchExecutor, batches, order: Mapping[str, int]) -> tuple[list[dict], str | None]:
    """The layer-wise rows, or none and why they cannot be measured (a graph without floating-point output)."""
    try:
        return _in_order(layerwise_sensitivity(executor, batches), order), None
    except NoFloatOutputError as unmeasured:
        return [], str(unmeasured)


def _in_order(rows, order: Mapping[str, int]) -> list[dict]:
    """OpError rows in topological order, each with its position."""
    return [{"index": order[r.op], **r.as_dict()} for r in sorted(rows, key=lambda r: order[r.op])]


def finite(value: float) -> float | None:
    """JSON has no infinity: an exact match (SNR +inf) or an undefined value becomes null."""
    return float(value) if math.isfinite(value) else None


def sanitize(value: Any) -> Any:
    """Pass details as strict JSON: non-finite floats null, numpy scalars plain, anything else named."""
    if isinstance(value, Mapping):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return finite(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return getattr(value, "__name__", None) or str(value)
