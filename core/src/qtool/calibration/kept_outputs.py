"""The graph outputs' float values of the first calibration samples, kept from calibration's onnxruntime run.

float_vs_quantized compares the quantized model with the float run of the final graph on the first calibration
samples (where none are held out). Calibration already ran the float graph in onnxruntime over them, one sample a
run where each sample is a whole feed (the ``feeds`` layout, or a batch the model fixes): those runs also return
the graph outputs, kept here. They stand in for a fresh float session and run only while they are what that run
would compute: the same output names, the same float function of each output (:mod:`qtool.ir.float_function`:
passes after calibration may change the graph or its float weights; baking keeps the float ones) and the same
samples (a digest of each sample's arrays: a source read twice may give other samples, a shuffling DataLoader).
Where samples are cut from batches (the ``samples`` layout) nothing is kept: a batched run's values may differ
from a run of the sample alone in their last bits, and a graph output need not hold samples along its first axis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from ..ir import Graph
from ..ir.float_function import FloatFunctions


class KeptOutputs:
    """The float values of the graph outputs for the first ``samples`` samples (whole feeds), with what they
    depend on; filled by :func:`qtool.calibration.calibrate`, read by :func:`qtool.analysis.float_gap`."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.names: list[str] = []
        self._functions: dict[str, frozenset] = {}
        self._values: list[dict[str, np.ndarray]] = []
        self._digests: list[bytes] = []

    def start(self, graph: Graph) -> list[str]:
        """Begin keeping the outputs of ``graph`` (as it is now, before the float run); their names."""
        self.clear()
        functions = FloatFunctions(graph)
        self.names = [v.name for v in graph.outputs]
        self._functions = {name: functions.key(name) for name in self.names}
        return self.names

    def clear(self) -> None:
        """Keep nothing (the run that filled this was dropped)."""
        self.names, self._functions, self._values, self._digests = [], {}, [], []

    def take(self, number: int, feeds: Mapping[str, np.ndarray], arrays: dict[str, np.ndarray],
             observed: set[str]) -> dict[str, np.ndarray]:
        """Keep the graph outputs among ``arrays`` (a piece of the run of sample ``number``, fed ``feeds``);
        ``arrays`` less the outputs no observer reads. An output an observer also reads is copied (an observer may
        work in its arrays)."""
        if number < self.samples and self.names:
            if number == len(self._values):
                self._values.append({})
                self._digests.append(_digest(feeds))
            kept = self._values[number]
            for name in self.names:
                if name in arrays:
                    kept[name] = np.array(arrays[name]) if name in observed else arrays[name]
        return {name: array for name, array in arrays.items() if name in observed}

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


def _digest(feeds: Mapping[str, np.ndarray]) -> bytes:
    """A digest of a sample's arrays: names, dtypes, shapes and bytes."""
    hasher = hashlib.sha1(usedforsecurity=False)
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        hasher.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        hasher.update(array.data)
    return hasher.digest()
