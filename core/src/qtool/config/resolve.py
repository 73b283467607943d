"""resolve_config: platform defaults < preset < the user's keys, validated before any work."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .loader import load_config_file
from .merge import merge_layer
from .presets import PRESET_ARGUMENT, get_preset
from .quantconfig import PLATFORM_SOURCE, QuantConfig
from .schema import base_config
from .validate import validate_layer
from .weight_only import apply_weight_only


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
    ignored = apply_weight_only(tree, origins, PLATFORM_SOURCE)
    config = QuantConfig.from_tree(tree, origins, name, weight_only=ignored is not None, ignored=ignored or ())
    _check_observers(config)
    return config


def _user_layer(user) -> tuple[Mapping[str, Any], str]:
    if user is None:
        return {}, "config"
    if isinstance(user, str | os.PathLike):
        return load_config_file(user), str(Path(user))
    if isinstance(user, QuantConfig):  # an earlier result's .config, as a notebook passes it back
        return user.to_dict(), "config"
    return user, "config"


def _preset_name(argument: str | None, user: Mapping[str, Any], user_source: str,
                 platform: Mapping[str, Any]) -> tuple[str | None, str]:
    if argument is not None:
        return argument, PRESET_ARGUMENT
    if "preset" in user:
        return user["preset"], user_source
    return platform.get("preset"), PLATFORM_SOURCE


def _check_observers(config: QuantConfig) -> None:
    """Observer names (before any ``:option``) must be registered observers."""
    from ..calibration import OBSERVERS, make_observer
    from ..errors import QtoolError
    from ..passes.parameter_quantize import WEIGHT_OBSERVERS
    from ..quant import QuantScheme

    known = OBSERVERS.names()
    named = [("calibration.observer", config.origins.get("calibration.observer"), config.calibration["observer"])]
    for role in ("activation", "weight"):
        table = getattr(config, role)
        if table is not None and "observer" in table:
            named.append((f"{role}.observer", config.origins.get(f"{role}.observer"), table["observer"]))
        for override in config.overrides:
            part = override.scheme_part(role)
            if isinstance(part, Mapping) and "observer" in part:
                named.append((f"{role}.observer", override.label, part["observer"]))
    for path, source, name in named:
        base = name.partition(":")[0]
        if base not in known:
            raise ConfigError(f"{source or 'built-in defaults'}: {path}: unknown observer {base!r}"
                              f"{did_you_mean(base, known)} (known: {', '.join(known)})")
        if path == "weight.observer" and base not in WEIGHT_OBSERVERS:
            raise ConfigError(f"{source or 'built-in defaults'}: {path}: observer {base!r} applies to activations "
                              f"only; weights take {' or '.join(WEIGHT_OBSERVERS)}")
        try:  # its option (percentile:150), checked now rather than when calibration builds it
            make_observer(name, QuantScheme.integer(8))
        except QtoolError as exc:
            raise ConfigError(f"{source or 'built-in defaults'}: {path}: {exc}") from None
