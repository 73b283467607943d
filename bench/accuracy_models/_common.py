"""Helpers shared by the accuracy benchmark's model modules."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import onnxruntime as ort

SessionLike = str | Path | ort.InferenceSession


def session(model: SessionLike, threads: int = 2) -> ort.InferenceSession:
    """An ORT CPU session over ``model`` (a path), or ``model`` itself when it already is one."""
    if isinstance(model, ort.InferenceSession):
        return model
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed distribution's package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: pip install -r bench/requirements.txt")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed package {package!r}")
    return path


def copy_from_wheel(workdir: Path, name: str, package: str, relative: str) -> Path:
    """``workdir/name``: a copy of the model file ``relative`` inside ``package`` (copied once)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    path = Path(workdir) / name
    if not path.exists():
        shutil.copyfile(package_file(package, relative), path)
    return path


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
