"""QuantizeSimplify: readers whose scheme equals the producer's share its parameters (one Q/DQ at export).

Readers with a different scheme keep their own config: the tensor is then
requantized at that reader (mixed precision). Readers of a graph input or of
a float producer share the first such reader's config when the schemes agree.
"""

from __future__ import annotations

from ..ir import Graph, Variable
from ..quant import QuantizationState, TensorQuantizationConfig
from .base import Pass, PassResult
from .dispatch import producer_config


class QuantizeSimplify(Pass):
    name = "QuantizeSimplify"

    def call(self, graph: Graph) -> PassResult:
        shared = []
        for var in graph.variables.values():
            if var.is_parameter:
                continue
            written = producer_config(var)
            anchors = [written] if written is not None and written.state is not QuantizationState.FP32 else []
            for reader in _fresh_readers(var):
                anchor = next((a for a in anchors if a.scheme == reader.scheme), None)
                if anchor is None:
                    anchors.append(reader)
                else:
                    reader.overlap(anchor)
                    shared.append(var.name)
        return PassResult(graph, bool(shared), {"shared": sorted(set(shared))})


def _fresh_readers(var: Variable) -> list[TensorQuantizationConfig]:
    """The readers' own configs of ``var`` still waiting for parameters, in consumer order."""
    readers = []
    for op in dict.fromkeys(var.consumers):
        if op.quant is None:
            continue
        for i, tqc in enumerate(op.quant.inputs):
            if op.inputs[i] is var and tqc is not None and tqc.state is QuantizationState.INITIAL:
                readers.append(tqc)
    return readers
