"""RuntimeCalibration: activation scales from calibration data, through each scheme's observer."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..calibration import calibrate
from ..ir import Graph
from ..quant import configured
from ..quant.policy import QuantizationPolicy as P
from .base import Pass, PassError, PassResult, PassWarning


class RuntimeCalibration(Pass):
    """Run :func:`qtool.calibration.calibrate` over ``data``; ``options`` go to the observers (``engine`` picks what
    runs the float model). ``readers``: what takes more from the same float run, each through its
    ``calibration_tap(graph)`` (None: nothing to take): the run's :class:`~.accuracy.float_peaks.FloatPeaks` (the
    peaks its later readers will ask for), a :class:`qtool.calibration.KeptOutputs` (the graph outputs of the first
    samples, float_vs_quantized's reference). ``precheck(graph)`` runs first, before any data is read: the
    pipeline's refusal of a plan the platform cannot run."""

    name = "RuntimeCalibration"

    def __init__(self, data, *, device: str = "cpu", progress: bool = False,
                 options: Mapping[str, Any] | None = None, readers: Sequence = (),
                 precheck: Callable[[Graph], None] | None = None) -> None:
        self.data, self.device, self.progress, self.options = data, device, progress, options
        self.readers = [reader for reader in readers if reader is not None]
        self.precheck = precheck

    def call(self, graph: Graph) -> PassResult:
        if self.precheck is not None:
            self.precheck(graph)
        if self.data is None:  # a weight-only run without data: nothing may wait for a range
            waiting = [(op.name, var.name) for op in graph.topological_order() for _, _, var, tqc in configured(op)
                       if _waiting(tqc)]
            if waiting:
                raise PassError(f"calibration data is required: tensor {waiting[0][1]!r} at op {waiting[0][0]!r} "
                                f"(and {len(waiting) - 1} more) is an activation to calibrate" if len(waiting) > 1
                                else f"calibration data is required: tensor {waiting[0][1]!r} at op "
                                     f"{waiting[0][0]!r} is an activation to calibrate")
            return PassResult(graph, False, {"configs": 0, "skipped": "no calibration data: no activation to observe"})
        taps = [tap for reader in self.readers if (tap := reader.calibration_tap(graph)) is not None]
        report = calibrate(graph, self.data, device=self.device, progress=self.progress, options=self.options,
                           engine=(self.options or {}).get("engine", "auto"), taps=taps)
        for found in report["warnings"]:
            warnings.warn(PassWarning(found["message"], code="calibration", op=found.get("op"),
                                      tensor=found.get("tensor")), stacklevel=2)
        return PassResult(graph, report["configs"] > 0, report)

    def ensures(self, graph: Graph) -> None:
        for op in graph.operations.values():
            for _, _, var, tqc in configured(op):
                if _waiting(tqc):
                    raise PassError(f"tensor {var.name!r} at op {op.name!r} was not calibrated")


def _waiting(tqc) -> bool:
    """An activation config still without parameters (dynamic ones get theirs at run time)."""
    return (tqc.role == "activation" and tqc.is_planned and not tqc.is_settled
            and not tqc.scheme.policy & P.DYNAMIC)
