"""The graph outputs' float values of the first calibration samples, kept from calibration's onnxruntime run.

float_vs_quantized compares the quantized model with the float run of the final graph on the first calibration
samples (where none are held out), and so does SensitivityFallback's ``enough_snr_db`` gate.
Calibration already ran the float graph in onnxruntime over them: those runs also return the graph outputs, kept
here. They stand in for a fresh float session and run only while they are
what that run would compute: the same output names, the same float function of each output
(:mod:`qtool.ir.float_function`: passes after calibration may change the graph or its float weights; baking keeps
the float ones) and the same samples (a digest of each sample's arrays: a source read twice may give other
samples, a shuffling DataLoader).
A graph computing in float16 or bfloat16 keeps nothing: its fresh session fuses ops that calibration's run leaves
apart, which round otherwise in 16 bits (a float16 BERT's output: 62.8 dB measured against the kept outputs, 64.4
against the float model's own session).
Where calibration joins samples into batches (the ``samples`` layout), a run of one sample alone keeps its outputs
whole (what its own float run returns: PP-OCRv4's samples each run alone, and their exporter names each output's
first axis apart from the input's); a run of several keeps each sample's rows where every input and output
declares the same batch axis first and each run returns one row per sample: such a run may round differently
from a run of the sample alone in the last bits (measured on the zoo's resnet18-w8, two-heads and trained-textdet:
bit for bit the same; trained-minilm: 4e-8 apart, its SQNR 6e-8 dB, float_gap rounds to 1e-3 dB), as
calibration's own session may (it returns more tensors, which changes the fusions onnxruntime may make:
trained-minilm's cosine moved by 1e-9).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..ir import Graph
from ..ir.float_function import FloatFunctions
from .data import feeds_digest
from .ort_engine import value_nbytes
from .sources import half_float

LIMIT = 32 << 20  # bytes kept at most: they live through calibration's peak (trained-textdet's 8 outputs: 7 MiB,
# its peak up to 10 MiB higher); outputs larger than that (a language model's logits) are computed again after it


class KeptOutputs:
    """The float values of the graph outputs for the first ``samples`` samples, with what they depend on; taken from
    calibration's float run (:meth:`calibration_tap`: a :class:`qtool.calibration.driver.FloatTap`), read by
    :func:`qtool.analysis.float_gap` and the fallback's gate. Every kept array is copied as it is taken (an observer
    may work in the run's arrays, and an array the run's thread allocated keeps memory of that thread's taken:
    trained-textdet's peak grew by about 100 MB)."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.cuts = ()  # it keeps rows of any batch
        self.tensors: list[str] = []
        self._functions: dict[str, frozenset] = {}
        self._batch_first = False
        self._alone = True  # each run of the batch taken now computes one sample
        self._values: list[dict[str, np.ndarray]] = []
        self._digests: list[str] = []
        self._bytes = 0
        self._batch: tuple[int, int] = (0, 0)  # the batch taken now: its first sample and its samples
        self._rows: dict[str, int] = {}  # rows of that batch taken so far, by output
        self._complete = False

    def calibration_tap(self, graph: Graph) -> KeptOutputs:
        """Keep the outputs of ``graph`` (as it is now) from the float run about to start; none of a graph that
        computes in float16 or bfloat16 (see the module)."""
        self.clear()
        if _computes_in_half(graph):
            return self
        functions = FloatFunctions(graph)
        self.tensors = [v.name for v in graph.outputs]
        self._functions = {name: functions.key(name) for name in self.tensors}
        self._batch_first = _batch_first(graph)
        return self

    def clear(self) -> None:
        """Keep nothing (a piece did not hold one row per sample, or too many bytes)."""
        self.tensors, self._functions, self._values, self._digests, self._bytes = [], {}, [], [], 0
        self._batch, self._rows, self._complete = (0, 0), {}, False

    def wants(self, first: int, count: int) -> bool:
        return bool(self.tensors) and first < self.samples

    def batch(self, first: int, count: int, feeds: Mapping[str, np.ndarray], run_samples: int) -> None:
        """The arrays taken next are of the batch of samples ``first .. first + count - 1``, fed ``feeds``: whole
        feeds (one sample), or samples along the first axis of every input; each run of it computes
        ``run_samples`` of them."""
        self._check_rows()
        self._alone = count == 1 or run_samples == 1
        if not (self._alone or self._batch_first):
            self.clear()
            return
        kept = min(count, self.samples - first)
        self._digests += ([feeds_digest({k: a[i:i + 1] for k, a in feeds.items()}) for i in range(kept)]
                          if count > 1 else [feeds_digest(feeds)])
        self._values += [{} for _ in range(kept)]
        self._batch, self._rows = (first, count), {}

    def take(self, name: str, array: np.ndarray) -> None:
        first, count = self._batch
        if name not in self._functions:
            return
        if self._alone:  # the array is one sample's output, whole
            sample = self._rows.get(name, 0)
            self._rows[name] = sample + 1
            if first + sample < self.samples:  # a sequence or a map (a ZipMap's) is a new Python value of each run
                self._keep(first + sample, name, np.array(array) if isinstance(array, np.ndarray) else array)
            return
        begin = self._rows.get(name, 0)
        rows = len(array) if array.ndim else 0
        if begin + rows > count:  # not one row per sample, though the model declares it so (a Reshape to [-1, C])
            self.clear()
            return
        self._rows[name] = begin + rows
        for row in range(begin, min(begin + rows, self.samples - first)):
            self._keep(first + row, name, np.array(array[row - begin:row - begin + 1]))

    def finish(self, complete: bool) -> None:
        self._check_rows()
        self._complete = complete and bool(self.tensors)

    def _keep(self, sample: int, name: str, value) -> None:
        self._values[sample][name] = value
        self._bytes += value_nbytes(value)
        if self._bytes > LIMIT:
            self.clear()

    def _check_rows(self) -> None:
        """The batch taken so far gave one row (or, run alone, one array) per sample of every output (else keep
        nothing)."""
        count = self._batch[1]
        if count > 1 and any(self._rows.get(name, 0) != count for name in self.tensors):
            self.clear()

    def reference(self, graph: Graph, samples: Sequence[Mapping[str, np.ndarray]],
                  names: Sequence[str]) -> list[dict[str, np.ndarray]] | None:
        """``{name: float value}`` of ``names`` for each of ``samples`` as calibration computed them, or None where
        they were not kept or may differ from a float run of ``graph`` now (see the module)."""
        if not self._complete or not samples or list(names) != self.tensors or len(samples) > len(self._values):
            return None
        functions = FloatFunctions(graph)
        if any(functions.key(name) != self._functions[name] for name in self.tensors):
            return None
        values = self._values[:len(samples)]
        if any(set(kept) != set(self.tensors) for kept in values):
            return None
        if any(feeds_digest(sample) != digest for sample, digest in zip(samples, self._digests, strict=False)):
            return None
        return values

    def batch_reference(self, graph: Graph, batches: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
                        samples_in: Callable[[Mapping[str, np.ndarray]], int]) -> list[dict[str, np.ndarray]] | None:
        """:meth:`reference` of ``batches`` as calibration's data batches them (``samples_in``: samples in a batch),
        the rows of a batch's samples joined back into the batch's outputs; None where :meth:`reference` is."""
        samples = [[batch] if samples_in(batch) == 1 else
                   [{name: a[i:i + 1] for name, a in batch.items()} for i in range(samples_in(batch))]
                   for batch in batches]
        values = self.reference(graph, [sample for rows in samples for sample in rows], names)
        if values is None:
            return None
        joined, first = [], 0
        for rows in samples:
            kept, first = values[first:first + len(rows)], first + len(rows)
            joined.append(kept[0] if len(kept) == 1 else {name: np.concatenate([k[name] for k in kept])
                                                           for name in names})
        return joined


def _computes_in_half(graph: Graph) -> bool:
    """A graph input, output or weight in float16 or bfloat16: calibration's run, every tensor it observes an output,
    leaves ops unfused that a session fuses (a LayerNormalization, a Gelu), and in 16 bits those round otherwise:
    a float16 BERT's kept outputs read the written model 1.6 dB below its SQNR against the float model's session."""
    return any(half_float(v.dtype) for v in (*graph.inputs, *graph.outputs, *graph.parameters()))


def _batch_first(graph: Graph) -> bool:
    """Every input and output declares the same named first axis (the batch)."""
    firsts = {v.shape[0] if v.shape else None for v in (*graph.inputs, *graph.outputs)}
    return len(firsts) == 1 and isinstance(next(iter(firsts)), str)
