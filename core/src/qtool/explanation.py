"""The explain document: per op, its decision, reason and per-tensor configs (``qtool explain``, the report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .ir import Graph
    from .platform import Diagnostic

EXPLAIN_SCHEMA_VERSION = 1


def explain_document(graph: Graph, platform: str, config=None, diagnostics: Sequence[Diagnostic] | None = None
                     ) -> dict:
    """Every op with its decision, reason and per-tensor configs, and the resolved configuration.

    Stable schema, version 1: ``{"schema_version", "platform", "config", "ops": [{"name", "op_type",
    "quantized", "reason", "inputs": [...], "outputs": [...]}]}``; each tensor entry has ``tensor``,
    ``scheme`` (None: not quantized there), ``state`` ("float" for a float tensor kept float, "integer" for an
    integer or boolean one: ids, shapes, indices, with its ``dtype`` where the model states it, "other" for
    strings, sequences and maps, with its ``type``: a ZipMap's ``seq(map(int64,tensor(float)))``), and where they
    apply ``role``, ``shares``, ``note``, ``scale`` and ``set_by`` (the labels of the overrides that changed its
    scheme at this op, ``qconfig.toml: override[1]``). ``diagnostics`` where given (``qtool explain``: what the
    platform's validate finds in the plan, before any calibration) adds ``"diagnostics": [Diagnostic.as_dict()]``.
    """
    from .passes.tensor_kinds import integer_tensors

    owners, integers = _owners(graph), integer_tensors(graph)
    ops = []
    for op in graph.topological_order():
        quant = op.quant
        entry = {"name": op.name, "op_type": op.op_type, "quantized": bool(quant and quant.quantized),
                 "reason": quant.reason if quant else "not dispatched"}
        for side, variables in (("inputs", op.inputs), ("outputs", op.outputs)):
            configs = getattr(quant, side) if quant else [None] * len(variables)
            entry[side] = [_tensor_entry(var, tqc, owners, integers, graph.value_info.get(var.name)) for var, tqc
                           in zip(variables, configs, strict=True) if var is not None]
            if config is not None:
                _add_overrides(entry[side], op, config)
        ops.append(entry)
    document = {"schema_version": EXPLAIN_SCHEMA_VERSION, "platform": platform,
                "config": config.to_dict() if config is not None else None, "ops": ops}
    if diagnostics is not None:
        document["diagnostics"] = [d.as_dict() for d in diagnostics]
    return document


def _add_overrides(entries: list[dict], op, config) -> None:
    """``set_by``: the overrides that changed a quantized tensor's scheme at ``op``, where any did."""
    for entry in entries:
        labels = config.overrides_for(op, entry["role"], entry["tensor"]) if entry["scheme"] is not None else []
        if labels:
            entry["set_by"] = labels


def _owners(graph: Graph) -> dict[int, str]:
    """Where each config lives, e.g. "conv1 output 0 (t)", by id."""
    owners = {}
    for op in graph.topological_order():
        if op.quant is None:
            continue
        for side, variables, configs in (("input", op.inputs, op.quant.inputs),
                                         ("output", op.outputs, op.quant.outputs)):
            for i, (var, tqc) in enumerate(zip(variables, configs, strict=True)):
                if tqc is not None and var is not None:
                    owners.setdefault(id(tqc), f"{op.name} {side} {i} ({var.name})")
    return owners


def _tensor_entry(var, tqc, owners: dict[int, str], integers: set[int], declared) -> dict:
    """One tensor's entry; ``declared``: its ValueInfoProto where the model has one."""
    if tqc is None:  # not quantized: a float tensor kept float, an integer one (ids, shapes, indices), or other
        other = _other_type(var, declared)
        if other is not None:
            return {"tensor": var.name, "scheme": None, "state": "other", "type": other}
        if id(var) not in integers:
            return {"tensor": var.name, "scheme": None, "state": "float"}
        entry = {"tensor": var.name, "scheme": None, "state": "integer"}
        dtype = var.value.dtype if var.is_parameter else var.dtype
        if dtype is not None:
            entry["dtype"] = str(np.dtype(dtype))
        return entry
    entry = {"tensor": var.name, "role": tqc.role, "scheme": tqc.scheme.short(), "state": tqc.state.value}
    if tqc.is_overlapped:
        entry["shares"] = owners.get(id(tqc.dominator), "?")
    if "reason" in tqc.notes:
        entry["note"] = tqc.notes["reason"]
    if tqc.dominator.is_settled and tqc.scale is not None:
        scale = tqc.scale.reshape(-1)
        entry["scale"] = float(scale[0]) if scale.size == 1 else f"{scale.size} values"
    return entry


def _other_type(var, declared) -> str | None:
    """What a tensor that holds neither numbers nor booleans is, in ONNX's notation (``tensor(string)``,
    ``seq(map(int64,tensor(float)))``); None for numbers, booleans, and tensors whose type the model leaves
    unstated."""
    dtype = var.value.dtype if var.is_parameter else var.dtype
    if dtype is not None:
        return "tensor(string)" if np.dtype(dtype).kind in "OSU" else None
    if declared is None or declared.type.HasField("tensor_type") or declared.type.WhichOneof("value") is None:
        return None
    return _type_text(declared.type)


def _type_text(type_proto) -> str:
    import onnx  # only here: explain's CLI starts without it

    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        element = getattr(type_proto, kind).elem_type
        name = onnx.TensorProto.DataType.Name(element).lower() if element else "?"
        return f"{'sparse_tensor' if kind == 'sparse_tensor_type' else 'tensor'}({name})"
    if kind == "sequence_type":
        return f"seq({_type_text(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return f"map({key},{_type_text(type_proto.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(type_proto.optional_type.elem_type)})"
    return kind or "?"
