"""Magika's file-type classifier (byte-level CNN + dense layers) on files of the installed Python packages."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import SessionLike, copy_from_wheel, package_file, session

SOURCE = (
    "Google's Magika file-type model standard_v3_3 (embedding of bytes, a 1-D convolution, layer norms and dense "
    "layers over the first and last 1024 bytes; 214 content types), shipped inside the PyPI wheel magika 1.0.3 at "
    "magika/models/standard_v3_3/model.onnx with its config.min.json, Apache-2.0. Features are extracted exactly as "
    "magika 1.0.3 does (read at most 4096 bytes from each end, strip whitespace, take 1024 bytes, pad with 256). "
    "Data: files of at least 256 bytes inside the installed packages numpy, scipy, scikit-learn, matplotlib, onnx, "
    "torch, Pillow, magika and rapidocr_onnxruntime (the versions pinned in bench/requirements.txt), labelled by "
    "their extension through magika's own content-type knowledge base (config/content_types_kb.min.json, plus .so as "
    "ELF; .txt left out as ambiguous); an extension several types claim accepts any of them. At most 40 files per "
    "type, chosen with seed 0 and dealt alternately to calibration and evaluation, so the two sets share no file."
)
METRIC = "accuracy vs the extension's content type"
INPUT = "bytes"
_PACKAGES = ("numpy", "scipy", "sklearn", "matplotlib", "onnx", "torch", "PIL", "magika", "rapidocr_onnxruntime")
_PER_TYPE = 40
# .so files are ELF shared objects (the knowledge base lists only ".elf" for ELF); a package's .txt files are mostly
# numeric tables or word lists whose right type is arguable, so they are left out.
_EXTRA_EXTENSIONS = {"so": "elf"}
_SKIPPED_EXTENSIONS = {"txt"}


def build(workdir: Path) -> Path:
    """Copy the model out of the installed wheel."""
    return copy_from_wheel(workdir, "magika_standard_v3_3.onnx", "magika", "models/standard_v3_3/model.onnx")


@lru_cache(maxsize=1)
def _config() -> dict:
    return json.loads(package_file("magika", "models/standard_v3_3/config.min.json").read_text())


@lru_cache(maxsize=1)
def _extension_labels() -> dict[str, frozenset[str]]:
    """Extension -> the model's content types that claim it."""
    knowledge = json.loads(package_file("magika", "config/content_types_kb.min.json").read_text())
    targets = set(_config()["target_labels_space"])
    out: dict[str, set[str]] = {}
    for label, info in knowledge.items():
        if label in targets:
            for extension in info.get("extensions") or []:
                out.setdefault(extension.lower(), set()).add(label)
    for extension, label in _EXTRA_EXTENSIONS.items():
        out.setdefault(extension, set()).add(label)
    return {k: frozenset(v) for k, v in out.items() if k not in _SKIPPED_EXTENSIONS}


def features(path: Path) -> np.ndarray:
    """The model's int32 input for one file, as magika 1.0.3 extracts it."""
    config = _config()
    beg_size, end_size = config["beg_size"], config["end_size"]
    pad, block = config["padding_token"], config["block_size"]
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(min(block, size))
        f.seek(size - min(block, size))
        tail = f.read(min(block, size))
    head, tail = head.lstrip()[:beg_size], tail.rstrip()[-end_size:] if tail.rstrip() else b""
    beg = list(head) + [pad] * (beg_size - len(head))
    end = [pad] * (end_size - len(tail)) + list(tail)
    return np.array(beg + end, np.int32)


@lru_cache(maxsize=1)
def _files() -> tuple[tuple[tuple[Path, frozenset[str]], ...], tuple[tuple[Path, frozenset[str]], ...]]:
    """(calibration, evaluation) lists of (file, accepted labels)."""
    labels = _extension_labels()
    by_type: dict[frozenset[str], list[Path]] = {}
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {package!r} is not installed: pip install -r bench/requirements.txt")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in root.rglob("*"):
            extension = path.suffix.lower().lstrip(".")
            if extension in labels and "__pycache__" not in path.parts and path.is_file():
                if path.stat().st_size >= 256:
                    by_type.setdefault(labels[extension], []).append(path)
    rng = np.random.default_rng(0)
    calibration, evaluation = [], []
    for accepted in sorted(by_type, key=sorted):
        paths = sorted(by_type[accepted], key=lambda p: (p.parent.name, p.name, str(p)))
        chosen = [paths[i] for i in rng.permutation(len(paths))[:_PER_TYPE]]
        calibration += [(p, accepted) for p in chosen[0::2]]
        evaluation += [(p, accepted) for p in chosen[1::2]]
    return tuple(calibration), tuple(evaluation)


def calibration_data(n: int = 64) -> list[dict[str, np.ndarray]]:
    """Features of ``n`` calibration files (spread over the types), one [1, 2048] int32 sample each."""
    calibration, _ = _files()
    order = np.random.default_rng(1).permutation(len(calibration))[:n]
    return [{INPUT: features(calibration[i][0])[None]} for i in sorted(order)]


def predict(model: SessionLike, paths) -> list[str]:
    sess = session(model)
    x = np.stack([features(p) for p in paths])
    scores = np.concatenate([sess.run(None, {INPUT: x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    targets = _config()["target_labels_space"]
    return [targets[i] for i in scores.argmax(1)]


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """Share of evaluation files whose predicted type is one their extension claims."""
    _, evaluation = _files()
    if limit:
        evaluation = evaluation[:: max(1, len(evaluation) // limit)][:limit]
    predicted = predict(model, [p for p, _ in evaluation])
    return float(np.mean([label in accepted for label, (_, accepted) in zip(predicted, evaluation, strict=True)]))
