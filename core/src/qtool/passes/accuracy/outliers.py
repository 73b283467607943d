"""Activation outliers: how far the largest input channel of a layer stands above the typical one.

A layer's input channel is the axis it contracts: the last axis of a MatMul's
first input, axis 1 of a Gemm's (0 with transA), axis 1 of a Conv's or
ConvTranspose's. The ratio is the largest per-channel ``max|x|`` over the
calibration samples divided by the median one; a per-tensor range set by one
channel that is 10x the rest leaves the others a tenth of the integer grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...executor import TorchExecutor
from ...ir import Operation
from ...ops import input_channel_axis, is_compute
from .running import Batch, ort_float_values, run_watching


def outlier_ratios(executor: TorchExecutor, batches: Sequence[Batch], ops: Sequence[Operation]) -> dict[str, float]:
    """Per op (the compute ops of :mod:`qtool.ops`): largest over median per-channel ``max|x|`` of its first input,
    float run (``inf`` when the median channel is zero and another is not, 1 for an all-zero input). An op whose
    contracted axis changes length between samples (a sequence axis, as in attention's scores @ V) has no
    channels and no ratio."""
    peaks: dict[str, torch.Tensor] = {}
    varying: set[str] = set()

    def observe(op, x: torch.Tensor) -> None:
        x = x.detach().abs().movedim(input_channel_axis(op), 0)
        peak = x.reshape(x.shape[0], -1).amax(dim=1).double()
        if op.name in peaks and peaks[op.name].shape != peak.shape:
            varying.add(op.name)
        elif op.name not in varying:
            peaks[op.name] = torch.maximum(peaks[op.name], peak) if op.name in peaks else peak

    layers = [op for op in ops if is_compute(op) and not op.inputs[0].is_parameter]
    readers: dict[str, list[Operation]] = {}
    for op in layers:
        readers.setdefault(op.inputs[0].name, []).append(op)
    values = ort_float_values(executor, batches, list(readers)) if layers else None
    if values is not None:
        for _, arrays in values:
            for name, x in arrays.items():
                for op in readers[name]:
                    observe(op, x)
    elif layers:
        run_watching(executor, batches, layers, lambda op, inputs, outputs: observe(op, inputs[0]), quantize=False)
    return {name: _ratio(peak) for name, peak in peaks.items() if name not in varying}


def _ratio(peak: torch.Tensor) -> float:
    largest, median = float(peak.max()), float(peak.median())
    if largest == 0.0:
        return 1.0
    return largest / median if median > 0.0 else math.inf
