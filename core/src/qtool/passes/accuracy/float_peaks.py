"""Per-channel float peaks shared by the passes of one run: one float run where each pass used to run its own.

ChannelSplit, OutlierOutputs and SensitivityFallback's outlier scan read per-channel ``max|x|`` of float tensors
over the same calibration samples (:func:`.outliers.channel_peaks`). One :class:`FloatPeaks` per quantize run
answers them all: a request that misses computes, in the same float run, what every registered reader may ask
later (its ``requests(graph)``), and a peak is served only while the float function of its tensor is unchanged:
the ops, attributes, inputs and parameter arrays it is computed from (:mod:`qtool.ir.float_function`;
ChannelSplit's rewrites invalidate the tensors they touch and every tensor after them). Calibration's float run
computes what the readers after it will ask for (:meth:`FloatPeaks.calibration_tap`): after a split, they need no
run of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...ir import Graph
from ...ir.float_function import FloatFunctions

Requests = Callable[[Graph], Mapping[str, int]]


class FloatPeaks:
    """Float peaks of ``data``'s first samples on ``device``, by tensor, axis and sample count, kept for one run."""

    def __init__(self, data, device: str = "cpu") -> None:
        self.data, self.device = data, device
        self._readers: list[tuple[int, Requests]] = []
        self._memo: dict[tuple[int, str, int], tuple[frozenset, np.ndarray | None]] = {}

    def add_reader(self, samples: int, requests: Requests) -> None:
        """Register a pass that will ask for peaks over ``samples`` samples; ``requests(graph)``: the tensors (with
        their axes) it may ask for on ``graph``, computed ahead with any earlier request."""
        self._readers.append((samples, requests))

    def drop_reader(self, requests: Requests | None) -> None:
        """A reader that will ask no more (it is done, or its peaks come from elsewhere)."""
        self._readers = [(count, asked) for count, asked in self._readers if asked != requests]

    def peaks(self, graph: Graph, samples: int, axes: Mapping[str, int], *,
              reader: Requests | None = None) -> dict[str, np.ndarray]:
        """:func:`.outliers.channel_peaks` of ``axes`` over the first ``samples`` samples, from the memo where the
        tensor's float function has not changed since, else from one float run (with the requests of the readers
        still to come: ``reader``, the one asking, is done)."""
        from ...calibration import load_calibration_data
        from .outliers import channel_peaks

        self.drop_reader(reader)
        functions = FloatFunctions(graph)
        missing = {name: axis for name, axis in axes.items() if not self._served(functions, samples, name, axis)}
        if missing:
            missing.update(self._unserved(functions, samples, exclude=missing))
            data = load_calibration_data(self.data, graph)
            computed = channel_peaks(graph, data.take(samples), missing, device=self.device,
                                     splittable=data.layout == "samples" and not data.fixed_batch)
            self._keep(functions, samples, missing, computed)
        found = {name: self._memo[samples, name, axis][1] for name, axis in axes.items()}
        return {name: peak for name, peak in found.items() if peak is not None}

    def calibration_tap(self, graph: Graph) -> PeakTap | None:
        """What calibration's float run of ``graph`` can compute for the readers still to come (the peaks they
        will ask for and the memo does not hold), or None where it holds them all."""
        functions = FloatFunctions(graph)
        counts = sorted({count for count, _ in self._readers})
        wanted = {count: self._unserved(functions, count, exclude={}) for count in counts}
        wanted = {count: axes for count, axes in wanted.items() if axes}
        return PeakTap(self, functions, wanted) if wanted else None

    def _served(self, functions: FloatFunctions, samples: int, name: str, axis: int) -> bool:
        """Whether the memo holds the peak of the tensor's float function now."""
        entry = self._memo.get((samples, name, axis))
        return entry is not None and entry[0] == functions.key(name)

    def _unserved(self, functions: FloatFunctions, samples: int, exclude: Mapping[str, int]) -> dict[str, int]:
        """The requests of the readers over ``samples`` samples that the memo does not serve, but ``exclude``."""
        found: dict[str, int] = {}
        for count, requests in self._readers:
            if count == samples:
                for name, axis in requests(functions.graph).items():
                    known = name in exclude or name in found
                    if not known and not self._served(functions, samples, name, axis):
                        found[name] = axis
        return found

    def _keep(self, functions: FloatFunctions, samples: int, axes: Mapping[str, int],
              computed: Mapping[str, np.ndarray]) -> None:
        for name, axis in axes.items():
            peak = computed.get(name)
            if peak is not None:
                peak.flags.writeable = False
            self._memo[samples, name, axis] = (functions.key(name), peak)


class PeakTap:
    """The peaks :class:`FloatPeaks`'s readers will ask for, taken from calibration's float run as it goes
    (:func:`qtool.calibration.calibrate`'s ``taps``): per sample count, the batches that lie wholly within the
    first samples. Kept in the memo only once the run is over, and only for a count whose first samples were
    whole batches (or all the data): then the peaks are those :func:`.outliers.channel_peaks` gives (a maximum
    does not depend on how samples were batched)."""

    def __init__(self, owner: FloatPeaks, functions: FloatFunctions,
                 wanted: Mapping[int, Mapping[str, int]]) -> None:
        from .outliers import PeakTable

        self._owner, self._functions = owner, functions
        self._tables = {count: PeakTable(axes) for count, axes in wanted.items()}
        self._cut: set[int] = set()  # counts whose first samples end inside a batch: nothing is kept for them
        self._taking: list[PeakTable] = []
        self.tensors = list(dict.fromkeys(name for axes in wanted.values() for name in axes))
        self.cuts = sorted(wanted)

    def wants(self, first: int, count: int) -> bool:
        return any(first < n for n in self._tables)

    def batch(self, first: int, count: int, feeds: Mapping[str, np.ndarray], run_samples: int) -> None:
        """The arrays :meth:`take` gets next are of the batch of samples ``first .. first + count - 1``."""
        self._cut |= {n for n in self._tables if first < n < first + count}
        self._taking = [table for n, table in self._tables.items() if first + count <= n]

    def take(self, name: str, array: np.ndarray) -> None:
        for table in self._taking:
            if name in table.axes:
                table.add_array(name, array)

    def finish(self, complete: bool) -> None:
        """The run is over: where it went through, its peaks go to the memo, under the float function of each
        tensor it ran."""
        if not complete:
            return
        for count, table in self._tables.items():
            if count not in self._cut:
                self._owner._keep(self._functions, count, table.axes, table.peaks())
