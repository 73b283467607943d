"""Real trained models with real data for bench/accuracy.py, one module per model.

Each module exposes ``SOURCE`` (where the model and the data come from, and their licences), ``METRIC`` (the
metric's name), ``build(workdir) -> Path`` (the float ONNX model), ``calibration_data(n) -> list[dict]``
(one sample per dict, disjoint from the evaluation samples) and ``evaluate(session_or_path, limit=None) -> float``
(the metric on the evaluation samples, through an onnxruntime session). Everything is offline: the models and
data ship inside the PyPI wheels pinned in bench/requirements.txt, or are made here from them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODELS = {
    "digits": "residual CNN trained here on scikit-learn's handwritten digits",
    "ocr": "PP-OCRv4 text recognition (rapidocr_onnxruntime) on rendered text lines",
    "textdet": "PP-OCRv4 text detection (DBNet, rapidocr_onnxruntime) on rendered pages",
    "minilm": "all-MiniLM-L6-v2 sentence encoder, retrieval over numpy/scipy docstrings",
    "filetype": "Magika file-type classifier on files of installed packages",
}


def load(name: str) -> ModuleType:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return importlib.import_module(f"{__name__}.{name}")
