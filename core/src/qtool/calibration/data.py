"""CalibrationData: samples for a graph's inputs, streamed in batches of a fixed size."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..ir import Graph
from .errors import CalibrationError
from .sources import Chunk, FileSource, PythonSource


class CalibrationData:
    """Batches of ``{input name: array}``, the first axis holding samples.

    Files are read one at a time while iterating. ``len()`` is the number of
    samples; :meth:`fingerprint` hashes the samples (not how they are batched).
    """

    def __init__(self, source: FileSource | PythonSource, batch_size: int, origin: str) -> None:
        if batch_size < 1:
            raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
        if source.length == 0:
            raise CalibrationError(f"{origin}: the calibration data holds no samples")
        self._source, self.batch_size, self.origin = source, batch_size, origin
        self.inputs = [v.name for v in source.inputs]
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return self._source.length

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        hasher = _Fingerprint(self.inputs)
        for batch in _rebatch(self._source.chunks(), self.batch_size):
            hasher.update(batch)
            yield batch
        self._fingerprint = hasher.hexdigest()

    def samples(self, n: int) -> list[dict[str, np.ndarray]]:
        """The first ``n`` samples, each a dict of arrays with a first axis of 1."""
        found: list[dict[str, np.ndarray]] = []
        for _, arrays in self._source.chunks():
            for i in range(len(next(iter(arrays.values())))):
                if len(found) >= n:
                    return found
                found.append({name: np.array(a[i : i + 1]) for name, a in arrays.items()})
        return found

    def fingerprint(self) -> str:
        """sha256 over every sample's input names, dtypes, shapes and bytes (hex)."""
        if self._fingerprint is None:
            for _ in self:
                pass
        return self._fingerprint

    def __repr__(self) -> str:
        return f"CalibrationData({self.origin}, {len(self)} samples, batch_size={self.batch_size})"


class _Fingerprint:
    """One sha256 stream per input, sample by sample, so batching does not change the result."""

    def __init__(self, names: list[str]) -> None:
        self._streams = {name: hashlib.sha256(name.encode()) for name in names}

    def update(self, batch: dict[str, np.ndarray]) -> None:
        for name, array in batch.items():
            stream = self._streams[name]
            header = f"{array.dtype.str}{array.shape[1:]}".encode()
            for sample in np.ascontiguousarray(array):
                stream.update(header)
                stream.update(sample.tobytes())

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for stream in self._streams.values():
            total.update(stream.digest())
        return total.hexdigest()


def _rebatch(chunks: Iterator[Chunk], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Cut and join chunks into batches of ``batch_size`` samples (the last may be smaller).

    A batch is cut early where the sample shape changes (inputs with dynamic sizes).
    """
    held: list[dict[str, np.ndarray]] = []
    count = 0
    for _, arrays in chunks:
        total = len(next(iter(arrays.values())))
        if held and any(a.shape[1:] != held[0][k].shape[1:] for k, a in arrays.items()):
            yield _join(held)
            held, count = [], 0
        start = 0
        while start < total:
            take = min(batch_size - count, total - start)
            held.append({k: a[start : start + take] for k, a in arrays.items()})
            count, start = count + take, start + take
            if count == batch_size:
                yield _join(held)
                held, count = [], 0
    if held:
        yield _join(held)


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_calibration_data(source, graph: Graph, batch_size: int = 32) -> CalibrationData:
    """Calibration data for ``graph`` from an .npz or .npy file, a directory of them,
    a dict of arrays, an array (single-input models) or an iterable of dicts/arrays.

    Arrays hold samples along the first axis, or are one sample without it.
    Shapes and dtypes are checked against the graph inputs before anything runs.
    """
    if isinstance(source, CalibrationData):
        return source
    inputs = list(graph.inputs)
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate with")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return CalibrationData(FileSource(path, inputs), batch_size, str(path))
    return CalibrationData(PythonSource(source, inputs), batch_size, "calibration data")
