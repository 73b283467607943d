"""Baking: parameter values replaced by their fake-quantized values, configs set BAKED.

The executor then skips their quantization and the exporter computes exact
integer codes. The float value stays on the variable (``float_value``) for
float simulation (analysis, accuracy passes). A parameter read at several places is baked once, in place, where
every reader quantizes it alike (tied weights: the model keeps one copy, under its own name); otherwise each
quantizing reader gets a private copy, so that no reader sees another's grid.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation
from ..quant import TensorQuantizationConfig, configured, fake_quantize
from ..quant.plan import BAKED
from .base import Pass, PassError, PassResult


class Baking(Pass):
    name = "Baking"

    def call(self, graph: Graph) -> PassResult:
        baked = []
        for op, index, tqc in _bakeable(graph):
            if tqc.state not in BAKED:  # baked with another reader of the same parameter
                continue
            alike = _readers_alike(graph, op.inputs[index], tqc)
            graph.set_parameter_value(op, index, bake_value(op.inputs[index].value, tqc), quantized=True,
                                      every_reader=bool(alike))
            for config in alike or [tqc]:
                config.bake()
            baked.append(op.inputs[index].name)
        graph.remove_unused()
        return PassResult(graph, bool(baked), {"baked": baked})

    def ensures(self, graph: Graph) -> None:
        left = [f"{op.inputs[i].name} at {op.name}" for op, i, _ in _bakeable(graph)]
        if left:
            raise PassError(f"parameters left unbaked: {', '.join(left[:5])}")


def _bakeable(graph: Graph) -> list[tuple[Operation, int, TensorQuantizationConfig]]:
    found = []
    for op in graph.topological_order():
        for side, i, var, tqc in configured(op):
            if side == "input" and var.is_parameter and tqc.state in BAKED and tqc.is_settled:
                found.append((op, i, tqc))
    return found


def _readers_alike(graph: Graph, var, tqc: TensorQuantizationConfig) -> list[TensorQuantizationConfig]:
    """The configs of every place that reads ``var`` when all of them bake it to the same values as ``tqc``
    (same scheme, scale and offset), else an empty list."""
    configs = []
    for reader in dict.fromkeys(var.consumers):
        for index, read in enumerate(reader.inputs):
            if read is not var:
                continue
            other = reader.quant.inputs[index] if reader.quant is not None else None
            if other is None or other.state not in BAKED or not other.is_settled or other.scheme != tqc.scheme \
                    or not (np.array_equal(other.scale, tqc.scale) and np.array_equal(other.offset, tqc.offset)):
                return []
            configs.append(other)
    return configs if var not in graph.outputs else []


def bake_value(value: np.ndarray, tqc: TensorQuantizationConfig) -> np.ndarray:
    """``value`` fake-quantized with ``tqc``'s parameters, in its own dtype."""
    array = np.asarray(value)
    return fake_quantize(array, tqc.scheme, tqc.scale, tqc.offset).astype(array.dtype, copy=False)
