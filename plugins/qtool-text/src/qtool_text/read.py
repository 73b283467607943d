"""Reading a table back: each line's parameters onto the matching config of a dispatched graph."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import qtool

from .errors import TextFormatError
from .fields import COLUMNS, parse_place, parse_values, scheme_fields
from .write import FORMAT_VERSION

_HEADER = re.compile(r"^# qtool-text format (\d+)\s*$")


def read_table(path: str | os.PathLike, graph) -> dict[str, list[str]]:
    """Set ``graph``'s configs from the table at ``path``; return ``set`` and ``missing`` tensor names.

    The graph must be dispatched like the one written (same schemes, same
    sharing). Each line's parameters go to the config that owns them (its
    dominator), state ACTIVATED; a passive config with a rule is checked
    instead. ``missing``: quantized tensors the table left without parameters.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TextFormatError(f"{path}: not a readable qtool text table ({exc})") from exc
    _check_header(lines, path)
    owners: set[int] = set()
    done: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() and not line.lstrip().startswith("#"):
            done.append(_apply(line, graph, owners, f"{path}: line {number}"))
    missing = [e.tensor for e in qtool.quantized_tensors(graph, settled=False) if not e.settled]
    return {"set": done, "missing": missing}


def _check_header(lines: list[str], path: Path) -> None:
    match = _HEADER.match(lines[0]) if lines else None
    if match is None:
        raise TextFormatError(f"{path}: line 1: expected the header '# qtool-text format {FORMAT_VERSION}'")
    if int(match.group(1)) != FORMAT_VERSION:
        raise TextFormatError(f"{path}: format {match.group(1)} is not supported (this reader: {FORMAT_VERSION})")


def _apply(line: str, graph, owners: set[int], where: str) -> str:
    try:
        cells = shlex.split(line)
    except ValueError as exc:
        raise TextFormatError(f"{where}: {exc}") from None
    if len(cells) != len(COLUMNS):
        raise TextFormatError(f"{where}: expected {len(COLUMNS)} fields ({' '.join(COLUMNS)}), got {len(cells)}")
    row = dict(zip(COLUMNS, cells, strict=True))
    tqc = _config_at(graph, row, where)
    where = f"{where}: op {row['op']!r} tensor {row['tensor']!r}"
    scale, offset = _params(row, tqc.scheme, where)
    root = tqc.dominator
    if root.is_passive or id(root) in owners:
        expected = (root.scale, root.offset)
        if not (np.array_equal(expected[0], scale) and np.array_equal(expected[1], offset)):
            raise TextFormatError(f"{where}: scale/zero point differ from those the graph already has for "
                                  f"these shared parameters ({expected[0]!s}, {expected[1]!s})")
    else:
        root.set_params(scale, offset)
        owners.add(id(root))
    return row["tensor"]


def _config_at(graph, row: dict[str, str], where: str) -> qtool.TensorQuantizationConfig:
    op = graph.operations.get(row["op"])
    if op is None:
        raise TextFormatError(f"{where}: op {row['op']!r} is not in the graph")
    place = parse_place(row["place"])
    if place is None:
        raise TextFormatError(f"{where}: place {row['place']!r} should be in:<i> or out:<i>")
    side, index = place
    variables = op.inputs if side == "input" else op.outputs
    configs = (op.quant.inputs if side == "input" else op.quant.outputs) if op.quant is not None else []
    tqc = configs[index] if index < len(configs) else None
    if tqc is None or index >= len(variables) or variables[index] is None:
        raise TextFormatError(f"{where}: op {op.name!r} has no quantization config at {row['place']}")
    name = variables[index].copy_of or variables[index].name  # the name in the model as read
    if name != row["tensor"]:
        raise TextFormatError(f"{where}: op {op.name!r} {row['place']} is tensor {name!r}, not {row['tensor']!r}")
    if tqc.role != row["role"]:
        raise TextFormatError(f"{where}: tensor {row['tensor']!r} is a {tqc.role} here, the table says {row['role']}")
    return tqc


def _params(row: dict[str, str], scheme: qtool.QuantScheme, where: str) -> tuple[np.ndarray, np.ndarray]:
    written = (row["policy"], row["bits"], row["codes"], row["axis"])
    if written != scheme_fields(scheme):
        raise TextFormatError(f"{where}: the table's scheme {' '.join(written)} differs from the graph's "
                              f"{' '.join(scheme_fields(scheme))}")
    try:
        scale = parse_values(row["scale"], np.float32)
        offset = parse_values(row["zero_point"], np.float32 if scheme.is_floating else np.int32)
    except ValueError as exc:
        raise TextFormatError(f"{where}: {exc}") from None
    if scale.shape != offset.shape:
        raise TextFormatError(f"{where}: {scale.size} scale(s) but {offset.size} zero point(s)")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise TextFormatError(f"{where}: scales must be positive numbers")
    return scale, offset
