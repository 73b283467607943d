"""The JSON ranges file: ``{"act_quant_info": {tensor: amax}}``, amax = 127 * scale."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import qtool

from .errors import TensorRTError
from .scales import QMAX, activation_scales, apply_scales


def ranges_document(graph) -> dict:
    scales = activation_scales(graph)
    return {"act_quant_info": {name: float(np.float64(scale) * QMAX) for name, scale in scales.items()}}


def write_ranges(graph, path: str | os.PathLike) -> Path:
    """Write the ranges of ``graph``'s quantized activations to ``path`` (atomically)."""
    return qtool.write_atomic(path, json.dumps(ranges_document(graph), indent=2) + "\n")


def read_ranges(path: str | os.PathLike, graph) -> dict[str, list[str]]:
    """Calibrate ``graph``'s activation configs from a ranges file; see :func:`apply_scales` for the report."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorRTError(f"{path}: not a readable JSON ranges file ({exc})") from exc
    info = document.get("act_quant_info") if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise TensorRTError(f"{path}: expected an object with key 'act_quant_info' mapping tensor names to amax")
    scales = {}
    for name, amax in info.items():
        if isinstance(amax, bool) or not isinstance(amax, int | float) or not math.isfinite(amax) or amax <= 0:
            raise TensorRTError(f"{path}: act_quant_info[{name!r}] = {amax!r}: amax must be a positive number")
        scales[name] = np.float32(amax / QMAX)
    return apply_scales(graph, scales, str(path))
