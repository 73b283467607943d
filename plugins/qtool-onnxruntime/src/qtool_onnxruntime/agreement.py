"""agreement(): the exported model in ONNX Runtime (session.run) against qtool's simulation, output by output."""

from __future__ import annotations

import numpy as np
from qtool import nonfinite_split, output_array

from .configs import written_config
from .qdq import per_element
from .session import ORT_ERRORS, RUNTIME, run


def agreement(graph, paths, samples: list[dict], simulated: list[list]) -> dict:
    """Max difference in output quantization steps (relative difference for float outputs) and cosine similarity.

    A model ORT refuses (written with allow_unsupported) gives a report with its ``error``.
    """
    runtime = RUNTIME
    try:
        ran = run(paths, samples, [v.name for v in graph.outputs])
    except ORT_ERRORS as exc:
        return {"runtime": runtime, "samples": len(samples), "error": str(exc).strip().splitlines()[0],
                "outputs": {}, "max_steps": None, "min_cosine": None}
    outputs = {}
    for k, var in enumerate(graph.outputs):
        ours = [output_array(r[k]).astype(np.float64)[None] for r in ran]
        theirs = [output_array(s[k]).astype(np.float64)[None] for s in simulated]
        tqc = written_config(var, True)
        if len({a.shape for a in ours + theirs}) == 1:
            outputs[var.name] = _compare(np.concatenate(ours), np.concatenate(theirs), tqc)
            continue
        # feeds of several shapes (sequence lengths, image sizes): the worst sample; a sample whose shapes differ
        # (the boxes a NonMaxSuppression keeps) is counted, not compared
        pairs = [(a, b) for a, b in zip(ours, theirs, strict=True) if a.shape == b.shape]
        outputs[var.name] = _worst([_compare(a, b, tqc) for a, b in pairs]) if pairs else {"cosine": None}
        if len(pairs) < len(ours):
            outputs[var.name]["shape_differs"] = len(ours) - len(pairs)
    steps = [o["max_steps"] for o in outputs.values() if "max_steps" in o]
    cosines = [o["cosine"] for o in outputs.values() if o["cosine"] is not None]
    return {
        "runtime": runtime,
        "samples": len(samples),
        "outputs": outputs,
        "max_steps": max(steps) if steps else None,
        "min_cosine": min(cosines) if cosines else None,
    }


def _worst(results: list[dict]) -> dict:
    keys = dict.fromkeys(key for r in results for key in r)  # nonfinite_differs: where a sample has it
    return {key: (min if key == "cosine" else max)(r.get(key, 0) for r in results) for key in keys}


def _compare(ours: np.ndarray, theirs: np.ndarray, tqc) -> dict:
    """The differences on the elements finite in both; an element NaN or infinite in one alone is counted
    (``nonfinite_differs``), one NaN in both or the same infinity agrees (a Sqrt of a negative made every
    difference NaN, and the cosine read 0)."""
    finite, _, differs = nonfinite_split(ours, theirs)
    ours_f, theirs_f = np.where(finite, ours, 0.0), np.where(finite, theirs, 0.0)
    diff = np.abs(ours_f - theirs_f)
    norm = np.linalg.norm(ours_f) * np.linalg.norm(theirs_f)
    cosine = float(np.dot(ours_f.ravel(), theirs_f.ravel()) / norm) if norm > 0 \
        else float(np.array_equal(ours_f, theirs_f))
    cosine = min(1.0, max(-1.0, cosine))  # rounding can put it a hair outside
    result = {"max_abs": float(diff.max(initial=0.0)), "cosine": cosine}
    if tqc is not None and not tqc.scheme.is_floating:
        step = per_element(tqc.scale, ours.shape[1:], tqc.scheme)
        codes = np.rint(ours_f / step) - np.rint(theirs_f / step)  # both sides are on the output grid
        result["max_steps"] = float(np.abs(codes).max(initial=0.0))
    else:
        scale = float(np.abs(theirs_f).max(initial=0.0)) or 1.0
        result["max_relative"] = float(diff.max(initial=0.0) / scale)
    if differs:
        result["nonfinite_differs"] = differs
    return result
