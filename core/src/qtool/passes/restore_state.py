"""RestoreState: the calibration step taken from a saved state file instead of data."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from ..ir import Graph
from ..state import StateError, load_state
from ..state import _read as read_state
from .base import Pass, PassResult


class RestoreState(Pass):
    """Put the configs saved by :func:`qtool.state.save_state` back on the dispatched graph.

    The file must match what the planning passes decided (same ops, same schemes),
    so a changed configuration or model is reported instead of silently mixed in.
    ``reshaping`` maps the accuracy passes that change weights before calibration
    (equalization, smoothquant) to this run's settings: the saved ranges fit only
    a model changed the same way, so a state saved with other settings is refused.
    """

    name = "RestoreState"

    def __init__(self, path: str | os.PathLike, reshaping: Mapping[str, Any] | None = None) -> None:
        self.path, self.reshaping = path, dict(reshaping or {})
        read_state(Path(path))  # a missing or foreign file fails now, before any pass runs

    def call(self, graph: Graph) -> PassResult:
        saved = load_state(graph, self.path)
        self._check_reshaping((saved.get("config") or {}).get("accuracy") or {})
        return PassResult(graph, True, {"path": str(self.path), "created": saved.get("created"),
                                        "data_fingerprint": saved.get("data_fingerprint")})

    def _check_reshaping(self, saved: Mapping[str, Any]) -> None:
        for name, now in self.reshaping.items():
            then = saved.get(name)
            if _setting(then) != _setting(now):
                raise StateError(f"{self.path}: the state was calibrated with accuracy.{name} = {_setting(then)}, "
                                 f"this run has {_setting(now)}: it changes the weights before calibration, so the "
                                 f"saved ranges do not fit; use the same [accuracy] {name} setting or calibrate again")


def _setting(value) -> Any:
    """An accuracy pass's setting as saved in a state file: false (off), true, or its options table."""
    if value is None or value is False:
        return False
    if isinstance(value, Mapping):
        return dict(value) or True
    return value
