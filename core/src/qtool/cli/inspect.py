"""``qtool inspect MODEL``: the model's op types, how many of each, and whether the executor runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from .console import console

if TYPE_CHECKING:
    from ..ir import Graph

INSPECT_SCHEMA_VERSION = 1


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="list a model's op types and whether qtool can run them")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=inspect_model)


def inspect_document(graph: Graph, model: str) -> dict:
    """The ``inspect --json`` document (schema version 1)."""
    from ..executor import op_type_counts, unsupported_ops
    from ..executor.feeds import expectation

    missing = unsupported_ops(graph)
    ops = [{"domain": domain, "op_type": op_type, "count": count, "supported": (domain, op_type) not in missing}
           for (domain, op_type), count in sorted(op_type_counts(graph).items())]
    return {
        "schema_version": INSPECT_SCHEMA_VERSION,
        "model": model,
        "opsets": dict(sorted(graph.info.opset_imports.items())),
        "inputs": [{"name": v.name, "type": expectation(v)} for v in graph.inputs],
        "outputs": [{"name": v.name, "type": expectation(v)} for v in graph.outputs],
        "ops": ops,
        "unsupported": [{"domain": d, "op_type": t, "nodes": nodes} for (d, t), nodes in sorted(missing.items())],
    }


def inspect_model(args) -> int:
    from ..executor import unsupported_ops
    from ..executor.errors import describe_missing
    from ..ir import load

    graph = load(args.model)
    document = inspect_document(graph, args.model)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_table(document)
    missing = unsupported_ops(graph)
    if missing:
        print(f"qtool: error: {args.model}: unsupported op(s): {describe_missing(missing)}", file=sys.stderr)
        return 1
    return 0


def _print_table(document: dict) -> None:
    out = console()
    for side in ("inputs", "outputs"):
        for v in document[side]:
            out.print(f"{side[:-1]} [bold]{escape(v['name'])}[/bold]: {escape(v['type'])}", highlight=False)
    table = Table(title=f"ops in {Path(document['model']).name}")
    for column, justify in (("op type", "left"), ("domain", "left"), ("count", "right"), ("supported", "left")):
        table.add_column(column, justify=justify)
    for row in document["ops"]:
        status = "yes" if row["supported"] else "[red]no[/red]"
        table.add_row(escape(row["op_type"]), escape(row["domain"] or "ai.onnx"), str(row["count"]), status)
    out.print(table)
