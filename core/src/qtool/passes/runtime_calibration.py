"""RuntimeCalibration: activation scales from calibration data, through each scheme's observer."""

from __future__ import annotations

from ..ir import Graph
from ..quant import QuantizationState
from .base import Pass, PassError, PassResult


class RuntimeCalibration(Pass):
    """Run :func:`qtool.calibration.calibrate` over ``data`` (a CalibrationData)."""

    name = "RuntimeCalibration"

    def __init__(self, data, *, device: str = "cpu", progress: bool = False) -> None:
        self.data, self.device, self.progress = data, device, progress

    def call(self, graph: Graph) -> PassResult:
        from ..calibration import calibrate

        report = calibrate(graph, self.data, device=self.device, progress=self.progress)
        return PassResult(graph, True, dict(report or {}))

    def ensures(self, graph: Graph) -> None:
        for op in graph.operations.values():
            for var, tqc in _activation_configs(op):
                if tqc.state is QuantizationState.INITIAL and not tqc.is_overlapped:
                    raise PassError(f"tensor {var.name!r} at op {op.name!r} was not calibrated")


def _activation_configs(op):
    if op.quant is None:
        return []
    pairs = zip((*op.inputs, *op.outputs), (*op.quant.inputs, *op.quant.outputs), strict=True)
    return [(var, tqc) for var, tqc in pairs if tqc is not None and tqc.role == "activation"]
