"""Merging validated layers: tables deep, lists replaced, scheme keys with their resets.

Every merged leaf remembers the layer that set it (``origins``, by dotted
path) so that a conflict can name where each side came from.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .schema import SCHEME_KEYS

Scheme = dict[str, Any] | None  # None: keep float


def merge_scheme(lower: Scheme, upper: Mapping[str, Any] | str, *, lower_origins: Mapping[str, str],
                 source: str) -> tuple[Scheme, dict[str, str]]:
    """``upper`` (a scheme table or "float") over ``lower``; returns the table and its key origins.

    A key that ``upper`` sets drops the keys it resets from ``lower`` unless
    ``upper`` sets them too (a new ``bits`` drops an inherited quant range).
    """
    if upper == "float":
        return None, {}
    table = dict(lower or {})
    origins = dict(lower_origins) if lower is not None else {}
    for key in upper:
        for dropped in SCHEME_KEYS[key].resets:
            if dropped not in upper:
                table.pop(dropped, None)
                origins.pop(dropped, None)
    table.update(upper)
    origins.update(dict.fromkeys(upper, source))
    return table, origins


def merge_layer(tree: dict[str, Any], origins: dict[str, str], layer: Mapping[str, Any], source: str) -> None:
    """Merge one validated layer into ``tree`` in place (``preset`` is handled by the caller)."""
    for key, value in layer.items():
        if key == "preset":
            continue
        if key in ("activation", "weight"):
            lower_origins = {k[len(key) + 1:]: v for k, v in origins.items() if k.startswith(key + ".")}
            tree[key], table_origins = merge_scheme(tree[key], value, lower_origins=lower_origins, source=source)
            for k in [k for k in origins if k == key or k.startswith(key + ".")]:
                del origins[k]
            origins[key] = source
            origins.update({f"{key}.{k}": v for k, v in table_origins.items()})
        elif key in ("override", "pass"):
            tree[key] = [copy.deepcopy(dict(item)) for item in value]
            for k in [k for k in origins if k.startswith(f"{key}[")]:
                del origins[k]
            origins.update({f"{key}[{i}]": source for i in range(len(value))})
        else:
            for name, item in value.items():
                tree[key][name] = list(item) if isinstance(item, list) else item
                origins[f"{key}.{name}"] = source
