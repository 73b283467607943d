"""Reading calibration samples: .npz files, directories of .npy/.npz, Python iterables.

Each reader yields *chunks*: ``(where, {input name: array})`` with the samples
along the first axis. :func:`check_chunk` turns raw arrays into such chunks and
rejects what does not fit the graph's inputs, naming the input and the place.
File readers look at array headers first, so a bad file is reported before
calibration starts and ``len()`` is known without loading the data.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ..ir import Variable
from .errors import CalibrationError

Chunk = tuple[str, dict[str, np.ndarray]]


# -- matching arrays to graph inputs -----------------------------------------------------
def describe(var: Variable) -> str:
    """'float32 [N, 3, 64, 64]': the expected array, N being the sample axis."""
    dtype = str(np.dtype(var.dtype)) if var.dtype is not None else "any dtype"
    if var.shape is None:
        return f"{dtype}, any shape"
    dims = ["N"] + ["?" if not isinstance(d, int) or d <= 0 else str(d) for d in var.shape[1:]]
    return f"{dtype} [{', '.join(dims)}]"


def check_array(var: Variable, shape: tuple, dtype: np.dtype, where: str) -> int:
    """Samples in an array of this shape for ``var`` (one sample when it lacks the sample axis)."""
    if var.dtype is not None and np.dtype(dtype) != np.dtype(var.dtype):
        raise CalibrationError(f"{where}: input {var.name!r} has dtype {np.dtype(dtype)}, "
                               f"expected {describe(var)}")
    if var.shape is None:
        return shape[0] if shape else 1
    rank = len(var.shape)
    if len(shape) not in (rank, rank - 1):
        raise CalibrationError(f"{where}: input {var.name!r} has shape {list(shape)}, expected {describe(var)} "
                               f"(or one sample without the first axis)")
    sample = shape[1:] if len(shape) == rank else shape
    for got, want in zip(sample, var.shape[1:], strict=True):
        if isinstance(want, int) and want > 0 and got != want:
            raise CalibrationError(f"{where}: input {var.name!r} has shape {list(shape)}, expected {describe(var)}")
    return shape[0] if len(shape) == rank else 1


def pick(keys: Iterable[str], inputs: list[Variable], where: str) -> dict[str, str]:
    """Which key feeds each input: its name, or the only key for a single-input model."""
    keys = list(keys)
    if len(inputs) == 1 and inputs[0].name not in keys and len(keys) == 1:
        return {inputs[0].name: keys[0]}
    missing = [v.name for v in inputs if v.name not in keys]
    if missing:
        raise CalibrationError(f"{where}: no array for input {missing[0]!r} (found: {', '.join(keys) or 'none'}; "
                               f"expected {describe(next(v for v in inputs if v.name == missing[0]))})")
    return {v.name: v.name for v in inputs}


def check_chunk(raw, inputs: list[Variable], where: str) -> dict[str, np.ndarray]:
    """Arrays by input name, each with the sample axis, from a mapping or (single input) an array."""
    if isinstance(raw, Mapping):
        chosen = pick(raw.keys(), inputs, where)
        arrays = {name: np.asarray(raw[key]) for name, key in chosen.items()}
    elif len(inputs) == 1:
        arrays = {inputs[0].name: np.asarray(raw)}
    else:
        names = ", ".join(v.name for v in inputs)
        raise CalibrationError(f"{where}: the model has inputs {names}; give a dict of arrays by input name")
    counts = {}
    for var in inputs:
        array = arrays[var.name]
        counts[var.name] = check_array(var, array.shape, array.dtype, where)
        if var.shape is not None and array.ndim == len(var.shape) - 1:
            arrays[var.name] = array[None]
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{where}: inputs hold different numbers of samples: "
                               + ", ".join(f"{k}: {n}" for k, n in counts.items()))
    return arrays


# -- array headers ---------------------------------------------------------------------------
def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the headers only."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                reader = readers.get(np.lib.format.read_magic(stream))
                if reader is None:
                    break
                shape, _, dtype = reader(stream)
            headers[member[: -len(".npy")]] = (shape, dtype)
        else:
            return headers
    with np.load(path) as data:  # an unusual format version: read the arrays themselves
        return {key: (data[key].shape, data[key].dtype) for key in data.files}


def _headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r")
            return {"": (array.shape, array.dtype)}
        return _npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CalibrationError(f"{path}: not a readable numpy file ({exc})") from exc


def _load(path: Path, keys: dict[str, str]) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        return {name: np.load(path, mmap_mode="r") for name in keys}
    with np.load(path) as data:
        return {name: data[key] for name, key in keys.items()}


# -- readers ---------------------------------------------------------------------------------
class FileSource:
    """One .npz/.npy file, or a directory of them read one at a time in name order."""

    def __init__(self, path: Path, inputs: list[Variable]) -> None:
        self.path, self.inputs = path, inputs
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
            if not files:
                raise CalibrationError(f"{path}: the directory holds no .npy or .npz files")
        elif path.suffix in (".npy", ".npz") and path.is_file():
            files = [path]
        elif path.exists():
            raise CalibrationError(f"{path}: calibration data must be an .npz or .npy file or a directory of them")
        else:
            raise CalibrationError(f"{path}: no such calibration file or directory")
        self.plan = [(file, *self._check(file)) for file in files]
        self.length = sum(count for _, _, count in self.plan)

    def _check(self, file: Path) -> tuple[dict[str, str], int]:
        headers = _headers(file)
        if file.suffix == ".npy" and len(self.inputs) > 1:
            names = ", ".join(v.name for v in self.inputs)
            raise CalibrationError(f"{file}: a .npy file holds one array but the model has inputs {names}; "
                                   "use .npz files keyed by input name")
        keys = pick(headers, self.inputs, str(file)) if file.suffix == ".npz" else {self.inputs[0].name: ""}
        counts = {check_array(v, *headers[keys[v.name]], str(file)) for v in self.inputs}
        if len(counts) > 1:
            raise CalibrationError(f"{file}: inputs hold different numbers of samples")
        return keys, counts.pop()

    def chunks(self) -> Iterator[Chunk]:
        for file, keys, _ in self.plan:
            yield str(file), check_chunk(_load(file, keys), self.inputs, str(file))


class PythonSource:
    """A mapping of arrays, an array, or an iterable of dicts/arrays (an iterator is kept in memory)."""

    def __init__(self, source, inputs: list[Variable]) -> None:
        if isinstance(source, Mapping) or isinstance(source, np.ndarray):
            items, self.whole = [source], True
        else:
            try:
                items = source if iter(source) is not source else list(source)
            except TypeError:
                raise CalibrationError(f"calibration data of type {type(source).__name__} is not a file, "
                                       "a directory or an iterable of arrays") from None
            self.whole = False
        self.items, self.inputs = items, inputs
        self.length = sum(next(iter(arrays.values())).shape[0] for _, arrays in self.chunks())

    def chunks(self) -> Iterator[Chunk]:
        for i, raw in enumerate(self.items):
            where = "calibration arrays" if self.whole else f"calibration item {i}"
            yield where, check_chunk(raw, self.inputs, where)
