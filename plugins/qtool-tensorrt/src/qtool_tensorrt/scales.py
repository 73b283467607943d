"""Activation scales between a qtool graph and TensorRT's per-tensor dynamic ranges (scale = amax / 127)."""

from __future__ import annotations

import numpy as np
import qtool

from .errors import TensorRTError

QMAX = 127


def is_trt_activation(scheme: qtool.QuantScheme) -> bool:
    """8-bit signed symmetric per-tensor integer codes: what a dynamic range can express."""
    policy, flags = scheme.policy, qtool.QuantizationPolicy
    return (not scheme.is_floating and scheme.num_of_bits == 8 and scheme.is_symmetric
            and bool(policy & flags.PER_TENSOR) and not policy & flags.DYNAMIC
            and scheme.quant_max == QMAX and scheme.quant_min in (-QMAX, -QMAX - 1))


def _tensor_order(graph) -> dict[str, int]:
    """Each tensor's place in topological order: graph inputs, then the outputs of the ops in order."""
    names = [var.name for var in graph.inputs]
    names += [var.name for op in graph.topological_order() for var in op.outputs if var is not None]
    return {name: place for place, name in enumerate(dict.fromkeys(names))}


def activation_scales(graph) -> dict[str, np.float32]:
    """The scale of every quantized activation tensor, the producer's where readers disagree.

    In topological order of the tensors (where each is written, not where it is first quantized: a graph input
    that only a late residual Add quantizes still comes first); a constant read as data comes before them all.
    """
    scales: dict[str, np.float32] = {}
    for entry in qtool.quantized_tensors(graph, roles=["activation"]):
        scales.setdefault(entry.tensor, np.float32(entry.scale.reshape(-1)[0]))
    order = _tensor_order(graph)
    return dict(sorted(scales.items(), key=lambda item: order.get(item[0], -1)))


def apply_scales(graph, scales: dict[str, np.float32], source: str) -> dict[str, list[str]]:
    """Set every root activation config of a tensor in ``scales`` (zero point 0) and report.

    Returns ``set`` (tensors calibrated), ``followed`` (tensors whose configs
    share another tensor's parameters, e.g. a Flatten output; their line is
    not used), ``unused`` (names with no activation config in the graph) and
    ``missing`` (root activation tensors the file does not cover, left as they were).
    """
    report: dict[str, set[str]] = {"set": set(), "followed": set(), "missing": set()}
    for entry in qtool.quantized_tensors(graph, roles=["activation"], settled=False):
        tqc = entry.config
        if tqc.dominator is not tqc or tqc.is_passive:
            report["followed"].add(entry.tensor)
        elif entry.tensor not in scales:
            report["missing"].add(entry.tensor)
        elif not is_trt_activation(tqc.scheme):
            raise TensorRTError(f"{source}: tensor {entry.tensor!r} is {tqc.scheme.short()} at op "
                                f"{entry.op.name!r}; TensorRT ranges only describe int8 symmetric per-tensor")
        else:
            tqc.set_params(np.float32(scales[entry.tensor]), np.int32(0))
            report["set"].add(entry.tensor)
    report["followed"] -= report["set"]
    known = set().union(*report.values())
    return {**{key: sorted(names) for key, names in report.items()}, "unused": sorted(set(scales) - known)}
