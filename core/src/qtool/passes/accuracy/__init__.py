"""Accuracy passes: optional passes that reduce quantization error (docs/accuracy.md).

Before dispatch, on the float graph: CrossLayerEqualization, SmoothQuant, AWQ, ChannelSplit.
After calibration, before Baking: OutlierOutputs, SensitivityFallback, HQQ, GPTQ, AdaRound, BiasCorrection.
:func:`accuracy_passes` builds them from a plain options dict.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from ...config.errors import did_you_mean
from ..base import Pass
from .options import AccuracyError

_MODULES = {"CrossLayerEqualization": "equalization", "SmoothQuant": "smoothquant", "AWQ": "awq",
            "ChannelSplit": "channel_split", "OutlierOutputs": "outlier_outputs", "SensitivityFallback": "fallback",
            "HQQ": "hqq", "GPTQ": "gptq", "AdaRound": "adaround", "BiasCorrection": "bias_correction"}


def _pass_class(name: str) -> type[Pass]:
    """The pass class ``name``, its module imported now (several import torch, so none is imported before use)."""
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


class PassTable(Mapping[str, type[Pass]]):
    """Pass classes by option name, in their order, each imported when first looked up: the names, their order
    and :func:`needs_data` of one pass import no other pass."""

    def __init__(self, classes: Mapping[str, str]) -> None:
        self._classes = dict(classes)  # option name -> class name

    def __getitem__(self, name: str) -> type[Pass]:
        return _pass_class(self._classes[name])

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


BEFORE_DISPATCH = PassTable({"equalization": "CrossLayerEqualization", "smoothquant": "SmoothQuant", "awq": "AWQ",
                             "channel_split": "ChannelSplit"})
AFTER_CALIBRATION = PassTable({"outlier_outputs": "OutlierOutputs", "fallback": "SensitivityFallback",
                               "hqq": "HQQ", "gptq": "GPTQ", "adaround": "AdaRound",
                               "bias_correction": "BiasCorrection"})


class _Unread:
    """Calibration data that is not read: the stand-in :func:`qtool.passes.order.check_accuracy` builds the passes
    on to check their options (a pass's constructor checks its options and keeps its data, never reads it)."""

    def __repr__(self) -> str:
        return "<calibration data, not read>"


UNREAD = _Unread()
REWRITING_WEIGHTS = ("adaround", "gptq", "bias_correction")  # after calibration; a state file holds no weights
RUN_ARGUMENTS = ("device", "progress", "runtime", "float_peaks", "kept_outputs")


def accuracy_passes(options: Mapping[str, Any] | None, device: str = "cpu", *, data=None,
                    progress: bool = False, runtime=None, float_peaks=None,
                    kept_outputs=None) -> tuple[list[Pass], list[Pass]]:
    """The passes to run before dispatch and after calibration, in their order.

    ``options`` maps a pass name (``equalization``, ``smoothquant``,
    ``fallback``, ``adaround``, ``bias_correction``) to true (defaults),
    false/absent (off) or a table of that pass's options. ``data`` is the
    calibration data (passes that run the graph need it); ``runtime`` runs a graph as the target platform does
    (:class:`qtool.platform_runtime.PlatformRuntime`, for the passes that take one); ``float_peaks`` the run's
    :class:`.float_peaks.FloatPeaks` (made here where None and there is data); ``kept_outputs`` the graph outputs
    calibration's run keeps (:class:`qtool.calibration.KeptOutputs`), for the passes that measure against them.
    """
    options = dict(options or {})
    known = [*BEFORE_DISPATCH, *AFTER_CALIBRATION]
    for name in options:
        if name not in known:
            raise AccuracyError(f"accuracy.{name}: unknown accuracy pass{did_you_mean(name, known)} "
                                f"(known: {', '.join(known)})")
    built = []
    if data is not None and float_peaks is None:  # one float run of the peaks ChannelSplit, OutlierOutputs and
        from .float_peaks import FloatPeaks  # the fallback's scan read

        float_peaks = FloatPeaks(data, device)
    for group in (BEFORE_DISPATCH, AFTER_CALIBRATION):
        run = {"device": device, "progress": progress, "runtime": runtime, "float_peaks": float_peaks,
               "kept_outputs": kept_outputs}
        built.append([_build(name, group[name], options[name], data, run)
                      for name in group if options.get(name) not in (None, False)])
    return built[0], built[1]


def needs_data(name: str) -> bool:
    """Whether the accuracy pass ``name`` runs the graph over calibration data."""
    group = next((g for g in (BEFORE_DISPATCH, AFTER_CALIBRATION) if name in g), None)
    return group is not None and "data" in inspect.signature(group[name].__init__).parameters


def option_names(cls: type[Pass]) -> list[str]:
    """The options a pass takes: its keyword-only constructor arguments but the run's (:data:`RUN_ARGUMENTS`)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in RUN_ARGUMENTS]


def _build(name: str, cls: type[Pass], value, data, run: Mapping[str, Any]) -> Pass:
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
    kwargs = {k: v for k, v in run.items() if k in parameters}
    if "data" in parameters:
        if data is None:
            raise AccuracyError(f"accuracy.{name}: {cls.name} needs calibration data")
        return cls(data, **value, **kwargs)
    return cls(**value, **kwargs)


def __getattr__(name: str) -> type[Pass]:
    """The pass classes as attributes of this package, each imported on first use."""
    if name in _MODULES:
        return _pass_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AFTER_CALIBRATION", "AWQ", "BEFORE_DISPATCH", "REWRITING_WEIGHTS", "AccuracyError", "AdaRound",
           "BiasCorrection", "ChannelSplit", "CrossLayerEqualization", "GPTQ", "HQQ", "OutlierOutputs",
           "SensitivityFallback", "PassTable", "SmoothQuant", "UNREAD", "accuracy_passes", "needs_data", "option_names"]
