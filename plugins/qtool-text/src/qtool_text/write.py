"""Writing the table: a versioned header that documents the columns, then one aligned line per quantized tensor."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import qtool

from .fields import COLUMNS, place, scheme_fields, value_range, values

FORMAT_VERSION = 1
HEADER = f"# qtool-text format {FORMAT_VERSION}"
LEGEND = """\
# One line per quantized tensor (once per shared parameters), in topological order.
# Fields are separated by spaces; a name with spaces or quotes is quoted as in a POSIX shell.
#   op, place      the op and where the tensor is: in:<i> (input i) or out:<i> (output i)
#   tensor, role   the tensor's name and role (activation, weight, bias)
#   policy         the quantization policy flags, joined by |
#   bits, codes    the width and the code range qmin..qmax (float formats: eXmY:max)
#   axis           - (per tensor), the channel axis, or axis/block_size (per block)
#   range          the representable float range (per channel: lowest..highest over channels); not read back
#   scale, zero_point  one value, or one per channel joined by commas; x = (q - zero_point) * scale"""


def table_rows(graph) -> list[tuple[str, ...]]:
    rows = []
    for entry in qtool.quantized_tensors(graph):
        integer = not entry.scheme.is_floating
        tensor = graph.variables[entry.tensor].copy_of or entry.tensor  # the name in the model as read
        rows.append((entry.op.name, place(entry.side, entry.index), tensor, entry.role,
                     *scheme_fields(entry.scheme), value_range(entry), values(entry.scale, False),
                     values(entry.offset, integer)))
    return rows


def table_text(graph) -> str:
    """The whole file for ``graph``'s settled quantized tensors."""
    rows = [tuple(f"#{c}" if i == 0 else c for i, c in enumerate(COLUMNS))]
    rows += [tuple(_quoted(cell) for cell in row) for row in table_rows(graph)]
    aligned = len(COLUMNS) - 2  # scale and zero_point can be long lists: not padded
    widths = [max(len(row[i]) for row in rows) for i in range(aligned)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), *row[aligned:]])
             for row in rows]
    return "\n".join([HEADER, LEGEND, *lines]) + "\n"


def _quoted(cell: str) -> str:
    """The cell as is, or shell-quoted when whitespace, quotes or a leading # would break the line."""
    plain = cell and not cell.startswith("#") and not any(c.isspace() or c in "'\"\\" for c in cell)
    return cell if plain else shlex.quote(cell)


def write_table(graph, path: str | os.PathLike) -> Path:
    """Write :func:`table_text` to ``path`` atomically."""
    return qtool.write_atomic(path, table_text(graph))
