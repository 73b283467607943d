"""The configuration error and its did-you-mean hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import QtoolError


class ConfigError(QtoolError, ValueError):
    """A configuration that cannot be used; the message names the file and the dotted key."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name, or ''."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def config_error(source: str, path: str, message: str) -> ConfigError:
    where = f"{source}: {path}" if path else source
    return ConfigError(f"{where}: {message}")
