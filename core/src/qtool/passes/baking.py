"""Baking: parameter values replaced by their fake-quantized values, configs set BAKED.

The executor then skips their quantization and the exporter computes exact
integer codes. The float value stays on the variable (``float_value``) for
float simulation (analysis, accuracy passes). A parameter read at several places gets a private copy per
quantizing reader, so that no reader sees another's grid.
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
            graph.set_parameter_value(op, index, bake_value(op.inputs[index].value, tqc), quantized=True)
            tqc.bake()
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


def bake_value(value: np.ndarray, tqc: TensorQuantizationConfig) -> np.ndarray:
    """``value`` fake-quantized with ``tqc``'s parameters, in its own dtype."""
    array = np.asarray(value)
    return fake_quantize(array, tqc.scheme, tqc.scale, tqc.offset).astype(array.dtype, copy=False)
