"""Reading configuration files: TOML, YAML or JSON, chosen by extension (tomllib and yaml are imported for a file
of theirs only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


class _ParseError(ValueError):
    """A TOML or YAML file's parse error (their own classes are known only once their parser is imported)."""


def _toml(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _ParseError(exc) from exc


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _ParseError(exc) from exc


_READERS = {
    ".toml": _toml,
    ".yaml": _yaml,
    ".yml": _yaml,
    ".json": lambda text: json.loads(text),
}
_PARSE_ERRORS = (_ParseError, json.JSONDecodeError)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The configuration in ``path`` as a dict; ConfigError names the file on any problem."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unknown config file type {path.suffix!r} (use .toml, .yaml, .yml or .json)")
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
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table, got {type(data).__name__}")
    return data
