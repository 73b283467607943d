"""``qtool explain``: per op, how each input and output is quantized (or why the op stays float).

Needs no calibration data: it runs the planning passes (simplify, dispatch,
fusion, simplification) only. ``qtool quantize --explain`` prints the same
report after the whole pipeline, with parameters settled.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..explanation import explain_document
from .console import console


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
    findings = planned.findings()
    document = explain_document(planned.graph, planned.platform.name, planned.config, findings)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_explanation(document, console(), planned.config)
        print_findings(findings, planned.platform.name, console())
    return 0


def print_findings(findings, platform: str, console: Console) -> None:
    """What the platform's validate finds in the plan: quantize refuses its ERRORs before calibrating, but for those
    a fallback may still undo (they wait for the final validation)."""
    if not findings:
        return
    errors = sum(d.severity.value == "error" for d in findings)
    refusal = f": {errors} error(s), which quantize refuses" if errors else ""
    console.print(f"{escape(platform)} on this plan, before calibration{refusal}")
    for diagnostic in findings:
        console.print(f"  {escape(str(diagnostic))}")


def _describe(entry: dict) -> str:
    if entry["scheme"] is None:
        return f"{entry['tensor']}: {entry.get('dtype') or entry.get('type') or entry['state']}"
    text = f"{entry['tensor']}: {entry['scheme']} [{entry['state']}]"
    if "shares" in entry:
        text += f" shares {entry['shares']}"
    if "set_by" in entry:
        text += f" set by {', '.join(entry['set_by'])}"
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
