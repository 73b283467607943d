"""Activation outliers: how far the largest channel of a tensor stands above the typical one.

A layer's input channel is the axis it contracts: the last axis of a MatMul's
first input, axis 1 of a Gemm's (0 with transA), axis 1 of a Conv's or
ConvTranspose's. The ratio is the largest per-channel ``max|x|`` over the
calibration samples divided by the median one; a per-tensor range set by one
channel that is 10x the rest leaves the others a tenth of the integer grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...ir import Graph, Operation
from ...ops import input_channel_axis, is_compute
from .running import Batch, ort_float_arrays, run_watching

if TYPE_CHECKING:
    from ...executor import TorchExecutor


class PeakTable:
    """Per tensor name of ``axes``: ``max|x|`` along every other axis, per index of its axis ``axes[name]``,
    merged over batches (float64). A tensor whose axis changes length between batches (a sequence axis), or a
    scalar, has no channels and is left out of :meth:`peaks`."""

    def __init__(self, axes: Mapping[str, int]) -> None:
        self.axes = dict(axes)
        self._peaks: dict[str, np.ndarray] = {}
        self._varying: set[str] = set()

    def add(self, name: str, peak: np.ndarray) -> None:
        """Merge one batch's per-channel peak of ``name``."""
        if name in self._peaks and self._peaks[name].shape != peak.shape:
            self._varying.add(name)
        elif name not in self._varying:
            self._peaks[name] = np.maximum(self._peaks[name], peak) if name in self._peaks else peak

    def add_array(self, name: str, x: np.ndarray) -> None:
        """Merge one batch's float value of ``name`` (a scalar, a dot product's, has no channels: left out)."""
        if x.ndim == 0:
            self._varying.add(name)
            return
        axis = self.axes[name] % x.ndim
        self.add(name, np.abs(x).max(axis=tuple(a for a in range(x.ndim) if a != axis)).astype(np.float64))

    def peaks(self) -> dict[str, np.ndarray]:
        return {name: peak for name, peak in self._peaks.items() if name not in self._varying}


def channel_peaks(graph: Graph, batches: Sequence[Batch], axes: Mapping[str, int], *, device: str = "cpu",
                  executor: TorchExecutor | None = None, splittable: bool = False) -> dict[str, np.ndarray]:
    """:class:`PeakTable` of ``axes`` over the float run of ``batches``: by onnxruntime where it can stand in for
    the executor (in runs of samples within its memory budget where ``splittable``: the batches hold samples
    along their first axis; a maximum does not depend on how they are cut), else by ``executor`` (a
    :class:`~qtool.executor.TorchExecutor` of ``graph`` on ``device``, made here when None)."""
    table = PeakTable(axes)
    values = ort_float_arrays(graph, device, batches, list(axes), splittable=splittable) if axes else None
    if values is not None:
        for _, arrays in values:
            for name, x in arrays.items():
                table.add_array(name, x)
    elif axes:
        if executor is None:
            from ...executor import TorchExecutor

            executor = TorchExecutor(graph, device)
        watched = {name: graph.variables[name].producer or graph.variables[name].consumers[0] for name in axes}

        def hook(op, inputs, outputs) -> None:
            for var, x in (*zip(op.inputs, inputs, strict=False), *zip(op.outputs, outputs, strict=False)):
                if var is not None and watched.get(var.name) is op and x is not None:
                    x = x.detach().abs().movedim(axes[var.name], 0)  # in torch: any float type, any device
                    table.add(var.name, x.reshape(x.shape[0], -1).amax(dim=1).double().cpu().numpy())

        run_watching(executor, batches, list(dict.fromkeys(watched.values())), hook, quantize=False)
    return table.peaks()


def outlier_ratios(graph: Graph, batches: Sequence[Batch], ops: Sequence[Operation], *, device: str = "cpu",
                   executor: TorchExecutor | None = None) -> dict[str, float]:
    """Per op (the compute ops of :mod:`qtool.ops`): largest over median per-channel ``max|x|`` of its first input,
    float run (``inf`` when the median channel is zero and another is not, 1 for an all-zero input; see
    :func:`channel_peaks` for ``device`` and ``executor``). An op whose contracted axis changes length between
    samples (a sequence axis, as in attention's scores @ V) has no channels and no ratio."""
    return ratios_of(ops, channel_peaks(graph, batches, input_axes(ops), device=device, executor=executor))


def input_axes(ops: Sequence[Operation]) -> dict[str, int]:
    """The channel axis of the first input of each compute op of ``ops`` that reads an activation, by input name."""
    axes: dict[str, int] = {}
    for op in ops:
        if is_compute(op) and not op.inputs[0].is_parameter:
            axes.setdefault(op.inputs[0].name, input_channel_axis(op))
    return axes


def ratios_of(ops: Sequence[Operation], peaks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """:func:`outlier_ratios` of ``ops`` from the peaks of their first inputs (``peaks``, by input name)."""
    return {op.name: ratio(peaks[op.inputs[0].name]) for op in ops
            if is_compute(op) and not op.inputs[0].is_parameter and op.inputs[0].name in peaks}


def ratio(peak: np.ndarray) -> float:
    """Largest over median of per-channel peaks (``inf`` when the median is zero and the largest is not); of an
    even count, the lower middle peak is the median."""
    largest, median = float(peak.max()), float(np.partition(peak, (peak.size - 1) // 2)[(peak.size - 1) // 2])
    if largest == 0.0:
        return 1.0
    return largest / median if median > 0.0 else math.inf
