"""RestoreState: the calibration step taken from a saved state file instead of data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..ir import Graph
from ..quant import configured
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
    ``rewriting`` maps those that change weights after it (adaround, gptq, bias_correction) likewise: a state
    saved with one on is refused where this run leaves it off.
    """

    name = "RestoreState"

    def __init__(self, path: str | os.PathLike, reshaping: Mapping[str, Any] | None = None,
                 rewriting: Mapping[str, Any] | None = None, calibration: Mapping[str, Any] | None = None) -> None:
        self.path, self.reshaping, self.rewriting = path, dict(reshaping or {}), dict(rewriting or {})
        self.calibration = dict(calibration or {})
        saved = read_state(Path(path))  # a missing or foreign file fails now, before any pass runs
        self.saved_accuracy = (saved.get("config") or {}).get("accuracy") or {}
        self.saved_calibration = (saved.get("config") or {}).get("calibration") or {}

    def call(self, graph: Graph) -> PassResult:
        # the settings first: a state saved with other equalization settings fits no weight of this run, and the
        # weights' check would blame the model ("another model, or other weights under the same names")
        self._check_reshaping(self.saved_accuracy)
        self._check_rewriting(self.saved_accuracy)
        self._check_observer_options(graph)
        saved = load_state(graph, self.path)
        return PassResult(graph, True, {"path": str(self.path), "created": saved.get("created"),
                                        "data_fingerprint": saved.get("data_fingerprint")})

    def _check_reshaping(self, saved: Mapping[str, Any]) -> None:
        for name, now in self.reshaping.items():
            then = saved.get(name)
            if _setting(then) != _setting(now):
                raise StateError(f"{self.path}: the state was calibrated with accuracy.{name} = {_setting(then)}, "
                                 f"this run has {_setting(now)}: it changes the weights before calibration, so the "
                                 f"saved ranges do not fit; use the same [accuracy] {name} setting or calibrate again")


    def _check_observer_options(self, graph: Graph) -> None:
        """The [calibration] settings the graph's observers read (a bare "percentile" observer its percentile, a
        histogram observer its bins) must be the state's: its ranges came from them (a changed percentile was
        taken silently, and the state's model written)."""
        from ..calibration.observers import settings_read

        observers = {tqc.scheme.observer for op in graph.operations.values() for _, _, _, tqc in configured(op)
                     if tqc.role == "activation"}
        for key in sorted(set().union(*map(settings_read, observers))):
            then, now = self.saved_calibration.get(key), self.calibration.get(key)
            if then is not None and now is not None and then != now:
                raise StateError(f"{self.path}: the state was calibrated with calibration.{key} = {then}, this run "
                                 f"has {now}: the saved ranges come from the other; use the same setting or "
                                 "calibrate again")

    def _check_rewriting(self, saved: Mapping[str, Any]) -> None:
        """``rewriting``: this run's settings of the passes that change weights after calibration (AdaRound,
        GPTQ, BiasCorrection); the state holds the scales, not the weights they wrote, so a state saved with one
        of them on reproduces its model only where this run runs it again (on data)."""
        for name, now in self.rewriting.items():
            if _setting(saved.get(name)) is not False and _setting(now) is False:
                raise StateError(f"{self.path}: the state was saved with accuracy.{name} on, which changed the "
                                 f"weights after calibration; the state holds the scales, not those weights: run "
                                 f"with --calib and the same [accuracy] {name} setting, or save a state without it")


def _setting(value) -> Any:
    """An accuracy pass's setting as saved in a state file: false (off), true, or its options table."""
    if value is None or value is False:
        return False
    if isinstance(value, Mapping):
        return dict(value) or True
    return value
