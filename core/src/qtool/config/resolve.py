"""resolve_config: platform defaults < preset < the user's keys, validated before any work."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .loader import load_config_file
from .merge import merge_layer
from .presets import get_preset
from .quantconfig import QuantConfig
from .schema import base_config
from .validate import validate_layer

PLATFORM_SOURCE = "platform defaults"


def resolve_config(platform_defaults: Mapping[str, Any] | None,
                   user: Mapping[str, Any] | str | os.PathLike | None = None, *,
                   preset: str | None = None) -> QuantConfig:
    """Merge platform defaults, then the preset (argument, else the file's ``preset``), then the user's keys.

    Tables merge deeply, lists replace. ConfigError names the file and dotted key.
    """
    platform_defaults = platform_defaults or {}
    validate_layer(platform_defaults, PLATFORM_SOURCE)
    user_data, user_source = _user_layer(user)
    validate_layer(user_data, user_source)
    tree, origins = base_config(), {}
    merge_layer(tree, origins, platform_defaults, PLATFORM_SOURCE)
    name, named_by = _preset_name(preset, user_data, user_source, platform_defaults)
    if name is not None:
        merge_layer(tree, origins, get_preset(name, named_by), f"preset {name!r}")
    merge_layer(tree, origins, user_data, user_source)
    config = QuantConfig.from_tree(tree, origins, name)
    _check_observers(config)
    return config


def _user_layer(user) -> tuple[Mapping[str, Any], str]:
    if user is None:
        return {}, "config"
    if isinstance(user, str | os.PathLike):
        return load_config_file(user), str(Path(user))
    return user, "config"


def _preset_name(argument: str | None, user: Mapping[str, Any], user_source: str,
                 platform: Mapping[str, Any]) -> tuple[str | None, str]:
    if argument is not None:
        return argument, "preset argument"
    if "preset" in user:
        return user["preset"], user_source
    return platform.get("preset"), PLATFORM_SOURCE


def _check_observers(config: QuantConfig) -> None:
    """Observer names must be registered (once the calibration package provides the registry)."""
    try:
        from ..calibration import OBSERVERS
    except ImportError:  # the calibration package is not there yet
        return
    known = OBSERVERS.names()
    named = [("calibration.observer", config.calibration["observer"])]
    named += [(f"{role}.observer", table["observer"]) for role in ("activation", "weight")
              if (table := getattr(config, role)) is not None and "observer" in table]
    for path, name in named:
        if name not in known:
            source = config.origins.get(path, "config")
            raise ConfigError(f"{source}: {path}: unknown observer {name!r}{did_you_mean(name, known)} "
                              f"(known: {', '.join(known)})")
