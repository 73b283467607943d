"""Reading a graph's quantization configs the way the exported model will show them.

``settled`` True looks at configs with parameters (export); False also at
configs still waiting for them (validation before calibration).
"""

from __future__ import annotations

from qtool.quant import QuantizationState, TensorQuantizationConfig


def active(tqc: TensorQuantizationConfig | None, settled: bool) -> bool:
    """True when ``tqc`` quantizes its tensor (or will, once calibrated)."""
    if tqc is None:
        return False
    if settled:
        return tqc.is_quantizing
    return QuantizationState.FP32 not in (tqc.state, tqc.dominator.state)


def written_config(var, settled: bool) -> TensorQuantizationConfig | None:
    """The config at which ``var``'s producer writes it, when it quantizes."""
    producer = var.producer if var is not None else None
    if producer is None or producer.quant is None:
        return None
    tqc = producer.quant.outputs[producer.outputs.index(var)]
    return tqc if active(tqc, settled) else None


def reader_config(op, index: int, settled: bool) -> TensorQuantizationConfig | None:
    tqc = op.quant.inputs[index] if op.quant is not None and index < len(op.quant.inputs) else None
    return tqc if active(tqc, settled) else None


def input_config(op, index: int, settled: bool) -> TensorQuantizationConfig | None:
    """What ``op`` reads at input ``index``: its own config, else the producer's (its DequantizeLinear)."""
    return reader_config(op, index, settled) or written_config(op.inputs[index], settled)


def reader_groups(var, settled: bool) -> dict[int, list[tuple[object, int, TensorQuantizationConfig]]]:
    """Active reader configs of ``var`` by dominator: ``{id(dominator): [(op, index, tqc), ...]}``."""
    groups: dict[int, list] = {}
    for op in dict.fromkeys(var.consumers):
        for index, source in enumerate(op.inputs):
            tqc = reader_config(op, index, settled) if source is var else None
            if tqc is not None:
                groups.setdefault(id(tqc.dominator), []).append((op, index, tqc))
    return groups


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
