"""Accuracy passes: optional passes that reduce quantization error (docs/accuracy.md).

Before dispatch, on the float graph: CrossLayerEqualization, SmoothQuant, AWQ, ChannelSplit.
After calibration, before Baking: OutlierOutputs, SensitivityFallback, HQQ, GPTQ, AdaRound, BiasCorrection.
:func:`accuracy_passes` builds them from a plain options dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ...config.errors import did_you_mean
from ..base import Pass
from .adaround import AdaRound
from .awq import AWQ
from .bias_correction import BiasCorrection
from .channel_split import ChannelSplit
from .equalization import CrossLayerEqualization
from .fallback import SensitivityFallback
from .gptq import GPTQ
from .hqq import HQQ
from .options import AccuracyError
from .outlier_outputs import OutlierOutputs
from .smoothquant import SmoothQuant

BEFORE_DISPATCH: dict[str, type[Pass]] = {"equalization": CrossLayerEqualization, "smoothquant": SmoothQuant,
                                          "awq": AWQ, "channel_split": ChannelSplit}
AFTER_CALIBRATION: dict[str, type[Pass]] = {"outlier_outputs": OutlierOutputs, "fallback": SensitivityFallback,
                                            "hqq": HQQ, "gptq": GPTQ,
                                            "adaround": AdaRound, "bias_correction": BiasCorrection}
RUN_ARGUMENTS = ("device", "progress")


def accuracy_passes(options: Mapping[str, Any] | None, device: str = "cpu", *, data=None,
                    progress: bool = False) -> tuple[list[Pass], list[Pass]]:
    """The passes to run before dispatch and after calibration, in their order.

    ``options`` maps a pass name (``equalization``, ``smoothquant``,
    ``fallback``, ``adaround``, ``bias_correction``) to true (defaults),
    false/absent (off) or a table of that pass's options. ``data`` is the
    calibration data (passes that run the graph need it).
    """
    options = dict(options or {})
    known = {**BEFORE_DISPATCH, **AFTER_CALIBRATION}
    for name in options:
        if name not in known:
            raise AccuracyError(f"accuracy.{name}: unknown accuracy pass{did_you_mean(name, known)} "
                                f"(known: {', '.join(known)})")
    built = []
    for group in (BEFORE_DISPATCH, AFTER_CALIBRATION):
        built.append([_build(name, cls, options[name], device, data, progress)
                      for name, cls in group.items() if options.get(name) not in (None, False)])
    return built[0], built[1]


def needs_data(name: str) -> bool:
    """Whether the accuracy pass ``name`` runs the graph over calibration data."""
    known = {**BEFORE_DISPATCH, **AFTER_CALIBRATION}
    return name in known and "data" in inspect.signature(known[name].__init__).parameters


def option_names(cls: type[Pass]) -> list[str]:
    """The options a pass takes: its keyword-only constructor arguments but device and progress."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in RUN_ARGUMENTS]


def _build(name: str, cls: type[Pass], value, device: str, data, progress: bool) -> Pass:
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise AccuracyError(f"accuracy.{name}: must be true, false or a table of options, got {value!r}")
    allowed = option_names(cls)
    for key in value:
        if key not in allowed:
            raise AccuracyError(f"accuracy.{name}.{key}: unknown option{did_you_mean(key, allowed)} "
                                f"(known: {', '.join(allowed)})")
    parameters = inspect.signature(cls.__init__).parameters
    run = {"device": device, "progress": progress}
    kwargs = {k: v for k, v in run.items() if k in parameters}
    if "data" in parameters:
        if data is None:
            raise AccuracyError(f"accuracy.{name}: {cls.name} needs calibration data")
        return cls(data, **value, **kwargs)
    return cls(**value, **kwargs)


__all__ = ["AFTER_CALIBRATION", "AWQ", "BEFORE_DISPATCH", "AccuracyError", "AdaRound", "BiasCorrection",
           "ChannelSplit", "CrossLayerEqualization", "GPTQ", "HQQ", "OutlierOutputs", "SensitivityFallback",
           "SmoothQuant", "accuracy_passes", "needs_data",
           "option_names"]
