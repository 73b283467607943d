"""The graph outputs' float values of the first calibration samples, kept from calibration's onnxruntime run.

float_vs_quantized compares the quantized model with the float run of the final graph on the first calibration
samples (where none are held out). Calibration already ran the float graph in onnxruntime over them: those runs
also return the graph outputs, kept here. They stand in for a fresh float session and run only while they are
what that run would compute: the same output names, the same float function of each output
(:mod:`qtool.ir.float_function`: passes after calibration may change the graph or its float weights; baking keeps
the float ones) and the same samples (a digest of each sample's arrays: a source read twice may give other
samples, a shuffling DataLoader).
Where calibration joins samples into batches (the ``samples`` layout) a sample's rows of the batched run are kept
where every input and output declares the same batch axis first and each run returns one row per sample: such a
run may round differently from a run of the sample alone in the last bits (measured on the zoo's resnet18-w8,
two-heads and trained-textdet: bit for bit the same; trained-minilm: 4e-8 apart, its SQNR 6e-8 dB, float_gap
rounds to 1e-3 dB), as calibration's own session may (it returns more tensors, which changes the fusions
onnxruntime may make: trained-minilm's cosine moved by 1e-9).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from ..ir import Graph
from ..ir.float_function import FloatFunctions

LIMIT = 32 << 20  # bytes kept at most: they live through calibration's peak (trained-textdet's 8 outputs: 7 MiB,
# its peak up to 10 MiB higher); outputs larger than that (a language model's logits) are computed again after it


class KeptOutputs:
    """The float values of the graph outputs for the first ``samples`` samples, with what they depend on; filled
    by :func:`qtool.calibration.calibrate`, read by :func:`qtool.analysis.float_gap`."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.names: list[str] = []
        self._functions: dict[str, frozenset] = {}
        self._values: list[dict[str, np.ndarray]] = []
        self._digests: list[bytes] = []
        self._bytes = 0

    def start(self, graph: Graph, splittable: bool) -> list[str]:
        """Begin keeping the outputs of ``graph`` (as it is now, before the float run); their names, none where
        they cannot be kept: ``splittable`` batches (samples along the first axis, cut into runs) where an output
        does not declare the inputs' batch axis first."""
        self.clear()
        if splittable and not _batch_first(graph):
            return []
        functions = FloatFunctions(graph)
        self.names = [v.name for v in graph.outputs]
        self._functions = {name: functions.key(name) for name in self.names}
        return self.names

    def clear(self) -> None:
        """Keep nothing (the run that filled this was dropped, or a piece did not hold what was expected)."""
        self.names, self._functions, self._values, self._digests, self._bytes = [], {}, [], [], 0

    def settle(self) -> None:
        """Copy the kept arrays in this thread: the run's thread allocated them, in memory of its own that stays
        taken while one of them lives (glibc's arenas: trained-textdet's peak grew by about 100 MB)."""
        self._values = [{name: np.array(array) for name, array in kept.items()} for kept in self._values]

    def _add(self, nbytes: int) -> bool:
        """Count ``nbytes`` more kept; whether they stay within :data:`LIMIT`."""
        self._bytes += nbytes
        return self._bytes <= LIMIT

    def batch(self, feeds: Mapping[str, np.ndarray], splittable: bool, observed: set[str]) -> _Batch:
        """The keeper of the next batch of the float run (fed ``feeds``; ``splittable``: its samples lie along
        the first axis, each run takes some of them) that reads the outputs out of its pieces."""
        first = len(self._digests)
        count = min(len(next(iter(feeds.values()))) if splittable and feeds else 1, self.samples - first)
        if self.names and count > 0:
            self._digests += ([_digest({k: a[i:i + 1] for k, a in feeds.items()}) for i in range(count)]
                              if splittable else [_digest(feeds)])
            self._values += [{} for _ in range(count)]
        return _Batch(self, first, count, splittable, observed)

    def reference(self, graph: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                  names: Sequence[str]) -> list[dict[str, np.ndarray]] | None:
        """``{name: float value}`` of ``names`` for each of ``samples`` as calibration computed them, or None where
        they were not kept or may differ from a float run of ``graph`` now (see the module)."""
        if not samples or list(names) != self.names or len(samples) > len(self._values):
            return None
        functions = FloatFunctions(graph)
        if any(functions.key(name) != self._functions[name] for name in self.names):
            return None
        values = self._values[:len(samples)]
        if any(set(kept) != set(self.names) for kept in values):
            return None
        if any(_digest(sample) != digest for sample, digest in zip(samples, self._digests, strict=False)):
            return None
        return values


class _Batch:
    """Reads the kept outputs of one batch out of the pieces of its float run."""

    def __init__(self, kept: KeptOutputs, first: int, count: int, splittable: bool, observed: set[str]) -> None:
        self.kept, self.first, self.count, self.splittable, self.observed = kept, first, count, splittable, observed
        self.rows: dict[str, int] = {}  # rows of the batch each output came in for so far

    @property
    def done(self) -> bool:
        """Whether nothing is left to keep after this batch."""
        return not self.kept.names or self.first + self.count >= self.kept.samples

    def take(self, arrays: dict[str, np.ndarray], size: int, step: int) -> dict[str, np.ndarray]:
        """Keep the outputs among ``arrays`` (a piece of a batch of ``size`` samples run ``step`` at a time);
        ``arrays`` less the outputs no observer reads. An output an observer also reads is copied (an observer may
        work in its arrays), as are the rows kept of a piece (not the piece)."""
        for name in self.kept.names if self.count > 0 else ():
            if name in arrays and not self._keep(name, arrays[name], size, step):
                self.kept.clear()  # not one row per sample, or too many bytes: keep nothing
                self.count = 0
                break
        return {name: array for name, array in arrays.items() if name in self.observed}

    def _keep(self, name: str, array: np.ndarray, size: int, step: int) -> bool:
        values = self.kept._values
        if not self.splittable:
            values[self.first][name] = np.array(array) if name in self.observed else array
            return self.kept._add(array.nbytes)
        begin = self.rows.get(name, 0)
        rows = min(step, size - begin)
        if array.ndim == 0 or len(array) != rows:
            return False
        self.rows[name] = begin + rows
        for row in range(begin, min(begin + rows, self.count)):
            values[self.first + row][name] = np.array(array[row - begin:row - begin + 1])
            if not self.kept._add(values[self.first + row][name].nbytes):
                return False
        return True


def _batch_first(graph: Graph) -> bool:
    """Every input and output declares the same named first axis (the batch)."""
    firsts = {v.shape[0] if v.shape else None for v in (*graph.inputs, *graph.outputs)}
    return len(firsts) == 1 and isinstance(next(iter(firsts)), str)


def _digest(feeds: Mapping[str, np.ndarray]) -> bytes:
    """A digest of a sample's arrays: names, dtypes, shapes and bytes."""
    hasher = hashlib.sha1(usedforsecurity=False)
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        hasher.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        hasher.update(array.data)
    return hasher.digest()
