"""``qtool list-platforms`` and ``qtool plugins``: what is installed."""

from __future__ import annotations

import json
import shutil
import textwrap

from rich.table import Table

from ..plugins import plugins
from ..plugins.registry import Registry
from .console import console

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
    from ..platform import PLATFORMS

    rows = []
    for _name, entry in sorted(PLATFORMS.entries().items()):
        rows.append({**entry.value.describe(), "distribution": entry.distribution, "version": entry.version})
    return {"schema_version": PLATFORMS_SCHEMA_VERSION, "platforms": rows}


def list_platforms(args) -> int:
    document = platforms_document()
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print("\n".join(platform_lines(document["platforms"], shutil.get_terminal_size((80, 24)).columns)))
    return 0


def platform_lines(rows: list[dict], width: int = 80) -> list[str]:
    """Per platform its name and distribution, then its description and facts indented, none wider than ``width``."""
    lines = []
    for row in rows:
        opsets = f", opsets {row['opsets'][0]}-{row['opsets'][1]}" if row["opsets"] else ""
        lines.append(f"{row['name']} ({row['distribution']} {row['version']})")
        for text in (row["description"], f"{row['output_format']}, {number_ranges(row['bits'])} bits{opsets}"):
            lines += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="    ",
                                   break_on_hyphens=False)
    return lines + ["", f"{len(rows)} platforms; qtool list-platforms --json gives policies and export options"]


def number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 4, 8, 16] -> "1-4/8/16"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return "/".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else "/".join(map(str, r)) for r in runs)


def list_plugins(args) -> int:
    from ..calibration.observers import OBSERVERS  # the core's registries: their modules may not be imported yet
    from ..passes.registry import PASSES
    from ..platform import PLATFORMS

    for registry in dict.fromkeys([PLATFORMS, PASSES, OBSERVERS, *Registry.instances]):
        registry.entries()  # run every registration hook so that its failures are recorded
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
    console().print(table)
    return 0
