"""Checking a configuration against a model: matchers and globs that match nothing."""

from __future__ import annotations

from fnmatch import fnmatchcase

from .quantconfig import QuantConfig


def check_against_graph(config: QuantConfig, graph) -> list[str]:
    """One warning for every override matcher and dispatch glob that matches nothing in ``graph``."""
    ops = list(graph.operations.values())
    warnings = []
    for override in config.overrides:
        if override.matcher == "tensor":
            hit = override.pattern in graph.variables
        else:
            hit = any(override.matches_op(op) for op in ops)
        if not hit:
            warnings.append(f"{override.label}: {override.matcher} = {override.pattern!r} matches nothing "
                            "in the model")
    for key, globs in (("dispatch.exclude", config.exclude), ("dispatch.include", config.include)):
        for glob in globs:
            if not any(fnmatchcase(op.name, glob) for op in ops):
                source = config.origins.get(key, "config")
                warnings.append(f"{source}: {key}: {glob!r} matches no op name in the model")
    return warnings
