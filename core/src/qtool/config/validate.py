"""Structural validation of one configuration layer (a file, a preset, platform defaults).

Checks keys, types and value ranges against :mod:`.schema`; combinations are
checked later, on the merged result, by :mod:`.schemes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, config_error, did_you_mean
from .schema import MATCHERS, Key, keys_of

_TYPE_NAMES = {"bool": "a boolean", "int": "an integer", "number": "a number", "str": "a string",
               "list": "a list of strings", "table": "a table", "overrides": "a list of tables",
               "passes": "a list of tables",
               "scheme": 'a table or "float"', "options": "true, false or a table"}


def validate_layer(data: Any, source: str) -> None:
    """Raise ConfigError naming ``source`` and the dotted key path of every problem in ``data``, all at once."""
    problems: list[tuple[str, str]] = []
    _table(data, "", "", problems)
    if isinstance(data, Mapping):
        for i, item in enumerate(_items(data.get("override"))):
            _override(item, f"override[{i}]", problems)
        for i, item in enumerate(_items(data.get("pass"))):
            _table(item, "pass", f"pass[{i}]", problems)
            problems += [(f"pass[{i}]", f"needs '{key}'") for key in ("name", "after") if key not in item]
    if len(problems) == 1:
        raise config_error(source, *problems[0])
    if problems:
        listed = " | ".join(f"{path}: {message}" if path else message for path, message in problems)
        raise ConfigError(f"{source}: {len(problems)} problems: {listed}")


def _items(value: Any) -> list:
    """The tables of a list of tables (anything else was reported by _table)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _table(data: Any, section: str, path: str, problems: list) -> None:
    if not isinstance(data, Mapping):
        problems.append((path, f"expected {_TYPE_NAMES['table']}, got {_type_of(data)}"))
        return
    keys = keys_of(section)
    for name, value in data.items():
        key_path = f"{path}.{name}" if path else str(name)
        if name not in keys:
            problems.append((key_path, "unknown key" + did_you_mean(name, keys)))
            continue
        _value(keys[name], value, name, key_path, problems)


def _value(key: Key, value: Any, name: str, path: str, problems: list) -> None:
    if key.kind == "scheme":
        if value != "float":
            if isinstance(value, str):
                problems.append((path, f'a scheme is a table or "float", got {value!r}'))
                return
            _table(value, "scheme", path, problems)
        return
    if key.kind == "table":
        _table(value, name, path, problems)
        return
    if key.kind == "options":
        if not isinstance(value, bool | Mapping):
            problems.append((path, f"expected {_TYPE_NAMES['options']}, got {_type_of(value)}"))
        return
    if key.kind in ("overrides", "passes"):
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            problems.append((path, f"expected {_TYPE_NAMES[key.kind]}, got {_type_of(value)}"))
        return
    if not _has_kind(value, key.kind):
        problems.append((path, f"expected {_TYPE_NAMES[key.kind]}, got {_type_of(value)}"))
    elif key.choices and value not in key.choices:
        choices = ", ".join(map(repr, key.choices))
        problems.append((path, f"{value!r} is not one of {choices}" + did_you_mean(value, key.choices)))
    elif key.check and (problem := key.check(value)):
        problems.append((path, problem))


def _override(item: Mapping, path: str, problems: list) -> None:
    _table(item, "override", path, problems)
    matchers = [m for m in MATCHERS if m in item]
    if len(matchers) != 1:
        got = ", ".join(matchers) if matchers else "none"
        problems.append((path, f"needs exactly one matcher ({', '.join(MATCHERS)}), got {got}"))
    effects = [k for k in ("activation", "weight", "bias") if k in item]
    if item.get("keep_float"):
        if effects:
            problems.append((f"{path}.keep_float",
                             f"keep_float = true conflicts with {', '.join(effects)} in the same override"))
    elif not effects:
        problems.append((path, "sets nothing: give activation, weight, bias or keep_float = true"))
    if "bias" in item and matchers == ["tensor"]:
        problems.append((f"{path}.bias", "bias applies per op: match with op_type or op_name"))


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _type_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return f"a list {value!r}"
    return f"{type(value).__name__} {value!r}"
