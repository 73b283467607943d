"""RuntimeCalibration: activation scales from calibration data, through each scheme's observer."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..calibration import calibrate
from ..ir import Graph
from ..quant import configured
from ..quant.policy import QuantizationPolicy as P
from .accuracy.float_peaks import FloatPeaks
from .base import Pass, PassError, PassResult, PassWarning


class RuntimeCalibration(Pass):
    """Run :func:`qtool.calibration.calibrate` over ``data``; ``options`` go to the observers (``engine`` picks what
    runs the float model; ``keep``, a :class:`qtool.calibration.KeptOutputs`, keeps the graph outputs' float values
    of the first samples). ``float_peaks``: the run's :class:`~.accuracy.float_peaks.FloatPeaks`, whose later
    readers get their peaks from this float run instead of one of their own."""

    name = "RuntimeCalibration"

    def __init__(self, data, *, device: str = "cpu", progress: bool = False,
                 options: Mapping[str, Any] | None = None, keep=None, float_peaks: FloatPeaks | None = None) -> None:
        self.data, self.device, self.progress, self.options, self.keep = data, device, progress, options, keep
        self.float_peaks = float_peaks

    def call(self, graph: Graph) -> PassResult:
        tap = self.float_peaks.calibration_tap(graph) if self.float_peaks is not None else None
        report = calibrate(graph, self.data, device=self.device, progress=self.progress, options=self.options,
                           engine=(self.options or {}).get("engine", "auto"), keep=self.keep,
                           taps=[tap] if tap else [])
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
