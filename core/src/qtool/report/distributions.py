"""What the report plots per tensor: activation histograms with the clipping candidates, weight ranges per channel.

Activations are observed again in float over the analysis samples by the
``auto`` observer (one histogram per tensor), so every candidate range it
weighs (minmax, percentile, KL, MSE) and its choice come from the observer code
itself; the chosen range drawn is the one the quantized graph really uses.
"""

from __future__ import annotations

import numpy as np

from ..calibration.observers import AutoObserver
from ..ir import Graph, Operation
from ..quant.policy import QuantizationPolicy as P
from ..quant.tensors import QuantizedTensor, quantized_tensors

HISTOGRAM_BINS = 1024  # the observers' fine histogram here (calibration uses 4096): a quarter of the cost
DISPLAY_BINS = 96
MAX_CHANNELS = 512  # weight channels listed per tensor (the rest are counted, not listed)


class ActivationHistograms:
    """Per quantized activation tensor of ``graph`` (per-tensor schemes): an ``auto`` observer, fed by the hook
    :meth:`observe` of float runs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.places = [p for p in quantized_tensors(graph, roles=["activation"]) if not p.scheme.is_per_channel]
        self._observers = {_key(p): AutoObserver(p.scheme, HISTOGRAM_BINS) for p in self.places}
        self._sites: dict[str, list[tuple[str, int, AutoObserver]]] = {}
        for (op, side, index), observer in self._observers.items():
            self._sites.setdefault(op, []).append((side, index, observer))
        self._seen: set[str] = set()

    def observe(self, op, inputs, outputs) -> None:
        """Hook of a float run: each watched tensor of the op into its observer."""
        sites = self._sites.get(op.name)
        if sites:
            self._seen.add(op.name)
            for side, index, observer in sites:
                observer.observe((inputs if side == "input" else outputs)[index])

    def unseen_ops(self) -> list[Operation]:
        """The watched ops no run has shown yet (those no graph output reads, where the runs computed the outputs)."""
        return [self.graph.operations[name] for name in self._sites if name not in self._seen]

    def entries(self) -> list[dict]:
        """Per observed tensor, in topological order: histogram and ranges."""
        observers = [(p, self._observers[_key(p)]) for p in self.places]
        return [_activation_entry(p, observer) for p, observer in observers if observer.observed]


def _key(place: QuantizedTensor) -> tuple[str, str, int]:
    return place.op.name, place.side, place.index


def _activation_entry(place: QuantizedTensor, observer: AutoObserver) -> dict:
    hist = observer.histogram.channel(0)
    candidates, best = observer.candidates(hist)
    low, high = place.range
    return {"tensor": place.tensor, "op": place.op.name, "side": place.side, "scheme": place.scheme.short(),
            "observer": place.scheme.observer, "range": [_num(low), _num(high)],
            "candidates": {name: [_num(lo), _num(hi)] for name, (lo, hi) in candidates.items()},
            "auto_choice": best, "histogram": _display_bins(hist)}


def _display_bins(hist) -> dict:
    """The observer's fine histogram summed into at most DISPLAY_BINS equal bins over its data range (the bins
    holding ``lo`` and ``hi`` included: a bin holds its lower edge, not its upper one). ``lo`` and ``width`` are
    exact (multiples of a power of two): edges rebuilt from them put each value in the bin that counted it."""
    first = int(np.floor(hist.lo / hist.width)) - hist.start
    last = int(np.floor(hist.hi / hist.width)) + 1 - hist.start
    first, last = max(first, 0), min(max(last, first + 1), hist.counts.size)
    counts = hist.counts[first:last]
    group = -(-counts.size // DISPLAY_BINS)
    padded = np.pad(counts, (0, -counts.size % group))
    summed = padded.reshape(-1, group).sum(axis=1)
    lo = (hist.start + first) * hist.width
    return {"lo": float(lo), "width": float(group * hist.width), "counts": [int(c) for c in summed]}


def weight_ranges(graph: Graph) -> list[dict]:
    """Per quantized weight, in topological order: each channel's float min/max (before baking) and its
    clipping range."""
    entries = []
    for place in quantized_tensors(graph, roles=["weight"]):
        var = next((v for v in place.op.inputs if v is not None and v.name == place.tensor), None)
        if var is None or var.value is None or place.scheme.policy & P.PER_BLOCK:
            continue
        value = np.asarray(var.value if var.float_value is None else var.float_value, dtype=np.float64)
        axis = place.scheme.channel_axis % value.ndim if place.scheme.is_per_channel and value.ndim else None
        rows = value.reshape(1, -1) if axis is None else np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
        low, high = (np.broadcast_to(np.asarray(r, dtype=np.float64).reshape(-1), (rows.shape[0],))
                     for r in place.range)
        shown = slice(0, MAX_CHANNELS)
        entries.append({"tensor": place.tensor, "op": place.op.name, "scheme": place.scheme.short(), "axis": axis,
                        "channels": rows.shape[0], "min": _nums(rows.min(axis=1)[shown]),
                        "max": _nums(rows.max(axis=1)[shown]), "clip_min": _nums(low[shown]),
                        "clip_max": _nums(high[shown])})
    return entries


def _num(value) -> float:
    """A float with 6 significant digits (enough to read, small in the page)."""
    return float(f"{float(np.asarray(value).reshape(-1)[0]):.6g}")


def _nums(values: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") for v in values.tolist()]
