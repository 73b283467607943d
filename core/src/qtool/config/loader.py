"""Reading configuration files: TOML, YAML or JSON, chosen by extension (tomllib and yaml are imported for a file
of theirs only)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..files import file_kind
from .errors import ConfigError


class _ParseError(ValueError):
    """A TOML or YAML file's parse error (their own classes are known only once their parser is imported)."""


def _toml(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _ParseError(_twice(str(exc), text) or exc) from exc


def _twice(message: str, text: str) -> str | None:
    """tomllib's 'Cannot overwrite a value (at line N, ...)' as JSON's and YAML's say it: the key given twice."""
    found = re.fullmatch(r"Cannot overwrite a value \(at line (\d+), column \d+\)", message)
    lines = text.splitlines()
    if found is None or not 0 < int(found.group(1)) <= len(lines):
        return None
    key = lines[int(found.group(1)) - 1].split("=", 1)[0].strip()
    return f"key {key!r} is given twice (line {found.group(1)})" if key else None


def _unique(pairs, where: str = "") -> dict:
    """A mapping from its key-value pairs; a key given twice is a parse error naming it (JSON and YAML kept the
    last without a word, where TOML refuses it)."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise _ParseError(f"key {key!r} is given twice{where}")
        found[key] = value
    return found


def _yaml(text: str) -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):  # the keys written (a merge's '<<' may be overridden)
                keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.tag != MERGE]
                _unique(((key, None) for key in keys), f" (line {node.start_mark.line + 1})")
            return super().construct_mapping(node, deep=deep)

    MERGE = "tag:yaml.org,2002:merge"
    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    UniqueKeyLoader.construct_mapping)
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise _ParseError(exc) from exc


_READERS = {
    ".toml": _toml,
    ".yaml": _yaml,
    ".yml": _yaml,
    ".json": lambda text: json.loads(text, object_pairs_hook=_unique),
}
_PARSE_ERRORS = (_ParseError, json.JSONDecodeError)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The configuration in ``path`` as a dict; ConfigError names the file on any problem."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unknown config file type {path.suffix!r} (use .toml, .yaml, .yml or .json)")
    kind = file_kind(path)
    if kind is not None:  # a character device (/dev/zero) was read forever
        raise ConfigError(f"{path}: is {kind}, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from exc
    try:
        data = reader(text)
    except _PARSE_ERRORS as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: invalid {path.suffix.lstrip('.').upper()}: {detail}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a configuration") from None
    if data is None and reader is _yaml and not _content(text):  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        got = "null" if data is None else type(data).__name__
        raise ConfigError(f"{path}: the top level must be a table, got {got}")
    return data


def _content(text: str) -> bool:
    """Whether a YAML text holds more than blank lines and comments."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())
