"""``qtool explain``: per op, how each input and output is quantized (or why the op stays float).

Needs no calibration data: it runs the planning passes (simplify, dispatch,
fusion, simplification) only. ``qtool quantize --explain`` prints the same
report after the whole pipeline, with parameters settled.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .console import console

if TYPE_CHECKING:
    from ..ir import Graph

EXPLAIN_SCHEMA_VERSION = 1


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="show how each op would be quantized on a platform (no data needed)")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--platform", required=True, help="target platform (see list-platforms)")
    p.add_argument("--config", help="configuration file (TOML, YAML or JSON)")
    p.add_argument("--preset", help="named starting point of the configuration")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..pipeline import plan

    planned = plan(args.model, args.platform, config=args.config, preset=args.preset)
    document = explain_document(planned.graph, planned.platform.name, planned.config)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_explanation(document, console(), planned.config)
    return 0


def explain_document(graph: Graph, platform: str, config=None) -> dict:
    """Every op with its decision, reason and per-tensor configs, and the resolved configuration.

    Stable schema, version 1: ``{"schema_version", "platform", "config", "ops": [{"name", "op_type",
    "quantized", "reason", "inputs": [...], "outputs": [...]}]}``; each tensor entry has ``tensor``,
    ``scheme`` (None: float there), ``state``, and where they apply ``role``, ``shares``, ``note``, ``scale``.
    """
    owners = _owners(graph)
    ops = []
    for op in graph.topological_order():
        quant = op.quant
        entry = {"name": op.name, "op_type": op.op_type, "quantized": bool(quant and quant.quantized),
                 "reason": quant.reason if quant else "not dispatched"}
        for side, variables in (("inputs", op.inputs), ("outputs", op.outputs)):
            configs = getattr(quant, side) if quant else [None] * len(variables)
            entry[side] = [_tensor_entry(var, tqc, owners) for var, tqc in zip(variables, configs, strict=True)
                           if var is not None]
        ops.append(entry)
    return {"schema_version": EXPLAIN_SCHEMA_VERSION, "platform": platform,
            "config": config.to_dict() if config is not None else None, "ops": ops}


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


def _tensor_entry(var, tqc, owners: dict[int, str]) -> dict:
    if tqc is None:
        return {"tensor": var.name, "scheme": None, "state": "float"}
    entry = {"tensor": var.name, "role": tqc.role, "scheme": tqc.scheme.short(), "state": tqc.state.value}
    if tqc.is_overlapped:
        entry["shares"] = owners.get(id(tqc.dominator), "?")
    if "reason" in tqc.notes:
        entry["note"] = tqc.notes["reason"]
    if tqc.dominator.is_settled and tqc.scale is not None:
        scale = tqc.scale.reshape(-1)
        entry["scale"] = float(scale[0]) if scale.size == 1 else f"{scale.size} values"
    return entry


def _describe(entry: dict) -> str:
    if entry["scheme"] is None:
        return f"{entry['tensor']}: float"
    text = f"{entry['tensor']}: {entry['scheme']} [{entry['state']}]"
    if "shares" in entry:
        text += f" shares {entry['shares']}"
    if "note" in entry:
        text += f" ({entry['note']})"
    return text


def print_explanation(document: dict, console: Console, config=None) -> None:
    if config is not None:
        console.print(escape(config.describe()))
    table = Table(title=f"qtool explain: {document['platform']}", show_lines=True)
    for column in ("op", "type", "decision", "inputs", "outputs"):
        table.add_column(column, overflow="fold")
    for op in document["ops"]:
        decision = "[green]quantized[/green]" if op["quantized"] else "[yellow]float[/yellow]"
        table.add_row(escape(op["name"]), op["op_type"], f"{decision}\n{escape(op['reason'])}",
                      *(escape("\n".join(map(_describe, op[side]))) for side in ("inputs", "outputs")))
    console.print(table)
