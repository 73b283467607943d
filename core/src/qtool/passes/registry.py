"""Passes that plugins register (hook ``qtool_register_passes``) and their place in the order."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ..config.errors import ConfigError, did_you_mean
from ..plugins.registry import Registry
from .base import Pass

PASSES: Registry[type[Pass]] = Registry("pass", "qtool_register_passes")


def check_pass_names(config) -> None:
    """ConfigError naming the file and ``pass[i].name`` for a configured pass that no plugin registered."""
    known = PASSES.names()
    for i, entry in enumerate(config.passes):
        if entry["name"] not in known:
            raise ConfigError(f"{config.origins.get(f'pass[{i}]', 'config')}: pass[{i}].name: unknown pass "
                              f"{entry['name']!r}{did_you_mean(entry['name'], known)} "
                              f"(known: {', '.join(known) or 'none installed'})")


def insert_plugin_passes(passes: list[Pass], entries: Sequence[Mapping[str, Any]], **run_arguments) -> list[Pass]:
    """``passes`` with each configured plugin pass inserted after the pass its ``after`` names.

    ``run_arguments`` (data, device, progress) go to constructors that take them.
    """
    result = list(passes)
    for i, entry in enumerate(entries):
        cls = PASSES.get(entry["name"])
        accepted = inspect.signature(cls.__init__).parameters
        options = {**{k: v for k, v in run_arguments.items() if k in accepted}, **dict(entry.get("options") or {})}
        try:
            instance = cls(**options)
        except TypeError as exc:
            raise ConfigError(f"pass[{i}].options: pass {entry['name']!r} does not take these options: {exc}") \
                from exc
        labels = [p.label for p in result]
        if entry["after"] not in labels:
            raise ConfigError(f"pass[{i}].after: no pass named {entry['after']!r} (passes: {', '.join(labels)})")
        result.insert(labels.index(entry["after"]) + 1, instance)
    return result
