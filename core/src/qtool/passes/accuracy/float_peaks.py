"""Per-channel float peaks shared by the passes of one run: one float run where each pass used to run its own.

ChannelSplit, OutlierOutputs and SensitivityFallback's outlier scan read per-channel ``max|x|`` of float tensors
over the same calibration samples (:func:`.outliers.channel_peaks`). One :class:`FloatPeaks` per quantize run
answers them all: a request that misses computes, in the same float run, what every registered reader may ask
later (its ``requests(graph)``), and a peak is served only while the float function of its tensor is unchanged:
the ops, attributes, inputs and parameter arrays it is computed from (:mod:`qtool.ir.float_function`;
ChannelSplit's rewrites invalidate the tensors they touch and every tensor after them).
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

    def peaks(self, graph: Graph, samples: int, axes: Mapping[str, int], *,
              reader: Requests | None = None) -> dict[str, np.ndarray]:
        """:func:`.outliers.channel_peaks` of ``axes`` over the first ``samples`` samples, from the memo where the
        tensor's float function has not changed since, else from one float run (with the requests of the readers
        still to come: ``reader``, the one asking, is done)."""
        from .outliers import channel_peaks
        from .running import take_samples

        self._readers = [(count, requests) for count, requests in self._readers if requests != reader]
        cone = FloatFunctions(graph).key

        def served(name: str, axis: int) -> bool:  # the memo holds the peak of the tensor's float function now
            entry = self._memo.get((samples, name, axis))
            return entry is not None and entry[0] == cone(name)

        missing = {name: axis for name, axis in axes.items() if not served(name, axis)}
        if missing:
            for count, requests in self._readers:
                if count == samples:
                    for name, axis in requests(graph).items():
                        if name not in missing and not served(name, axis):
                            missing[name] = axis
            computed = channel_peaks(graph, take_samples(graph, self.data, samples), missing, device=self.device)
            for name, axis in missing.items():
                peak = computed.get(name)
                if peak is not None:
                    peak.flags.writeable = False
                self._memo[samples, name, axis] = (cone(name), peak)
        found = {name: self._memo[samples, name, axis][1] for name, axis in axes.items()}
        return {name: peak for name, peak in found.items() if peak is not None}
