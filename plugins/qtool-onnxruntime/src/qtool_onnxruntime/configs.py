"""Reading a graph's quantization configs the way the exported model will show them.

``settled`` True looks at configs with parameters (export); False also at
configs still waiting for them (validation before calibration). Where each
config is read comes from the core plan (:mod:`qtool.quant.plan`).
"""

from __future__ import annotations

from qtool.quant import TensorQuantizationConfig, reader_config, reader_groups, written_config
from qtool.quant import quantizes as active

__all__ = ["active", "input_config", "output_config", "pair_uses", "reader_config", "reader_groups",
           "written_config"]


def input_config(op, index: int, settled: bool) -> TensorQuantizationConfig | None:
    """What ``op`` reads at input ``index``: its own config, else the producer's (its DequantizeLinear)."""
    return reader_config(op, index, settled) or written_config(op.inputs[index], settled)


def output_config(graph, op, index: int, settled: bool) -> TensorQuantizationConfig | None:
    """The config of the one QuantizeLinear right after ``op``'s output ``index``, if the export writes one.

    That is the producer's own config, or else the config all readers share
    when every reader quantizes the tensor the same way.
    """
    var = op.outputs[index]
    written = written_config(var, settled)
    if written is not None:
        return written
    groups = reader_groups(var, settled)
    readers = sum(1 for c in var.consumers for v in c.inputs if v is var)
    if len(groups) != 1 or var in graph.outputs:
        return None
    (members,) = groups.values()
    return members[0][2] if len(members) == readers else None


def pair_uses(graph, var, tqc: TensorQuantizationConfig, settled: bool) -> int:
    """How many node inputs (and graph outputs) read the DequantizeLinear of ``var``'s pair for ``tqc``."""
    written, groups = written_config(var, settled), reader_groups(var, settled)
    if written is None or tqc.dominator is not written.dominator:
        return len(groups.get(id(tqc.dominator), []))
    others = [members for key, members in groups.items() if key != id(written.dominator)]
    return len(var.consumers) - sum(len(m) for m in others) + len(others) + (var in graph.outputs)
