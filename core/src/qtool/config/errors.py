"""The configuration error and its did-you-mean hint."""

from __future__ import annotations

from ..errors import QtoolError, did_you_mean

__all__ = ["ConfigError", "config_error", "did_you_mean"]


class ConfigError(QtoolError, ValueError):
    """A configuration that cannot be used; the message names the file and the dotted key."""


def config_error(source: str, path: str, message: str) -> ConfigError:
    where = f"{source}: {path}" if path else source
    return ConfigError(f"{where}: {message}")
