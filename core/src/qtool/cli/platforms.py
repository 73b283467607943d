"""``qtool list-platforms`` and ``qtool plugins``: what is installed."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ..platform import PLATFORMS
from ..plugins import plugins
from ..plugins.registry import Registry

PLATFORMS_SCHEMA_VERSION = 1


def add_parser(sub) -> None:
    p = sub.add_parser("list-platforms", help="list the installed target platforms")
    p.add_argument("--json", action="store_true", help="print JSON (schema documented in docs/cli.md)")
    p.set_defaults(handler=list_platforms)
    p = sub.add_parser("plugins", help="list the installed plugin distributions and their hooks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=list_plugins)


def platforms_document() -> dict:
    """The ``list-platforms --json`` document (stable schema, version 1)."""
    rows = []
    for _name, entry in sorted(PLATFORMS.entries().items()):
        rows.append({**entry.value.describe(), "distribution": entry.distribution, "version": entry.version})
    return {"schema_version": PLATFORMS_SCHEMA_VERSION, "platforms": rows}


def list_platforms(args) -> int:
    document = platforms_document()
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    table = Table(title="qtool platforms")
    for column in ("platform", "distribution", "version", "output format", "bits", "policies", "opsets"):
        table.add_column(column, overflow="fold")
    for row in document["platforms"]:
        opsets = "-".join(map(str, row["opsets"])) if row["opsets"] else "-"
        table.add_row(row["name"], row["distribution"], row["version"], row["output_format"],
                      ", ".join(map(str, row["bits"])), ", ".join(row["policies"]), opsets)
    Console().print(table)
    return 0


def list_plugins(args) -> int:
    for registry in Registry.instances:  # run every registration hook so that its failures are recorded
        registry.entries()
    records = [r.as_dict() for r in plugins()]
    if args.json:
        print(json.dumps({"schema_version": 1, "plugins": records}, indent=2))
        return 0
    table = Table(title="qtool plugins")
    for column in ("entry point", "distribution", "version", "hooks", "status"):
        table.add_column(column)
    for r in records:
        status = "blocked" if r["blocked"] else (f"[red]error: {r['error']}[/red]" if r["error"] else "ok")
        table.add_row(r["name"], r["distribution"], r["version"], ", ".join(r["hooks"]), status)
    Console().print(table)
    return 0
