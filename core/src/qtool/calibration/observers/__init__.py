"""Calibration observers and their registry.

Built-ins: ``minmax``, ``percentile``, ``kl``, ``mse`` and ``auto`` (the best of
those by quantization error, per tensor). A plugin adds more
through the ``qtool_register_observers(register)`` hook with
``register(name, ObserverClass)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ...plugins.manager import PluginError
from ...plugins.registry import Registry
from ...quant import QuantScheme
from ..errors import CalibrationError
from .auto import AutoObserver
from .base import Observer
from .histogram import DEFAULT_BINS, ChannelHistogram, HistogramObserver, RunningHistogram
from .kl import EntropyObserver, entropy_threshold
from .minmax import MinMaxObserver
from .mse import MSEObserver
from .percentile import PercentileObserver


def _builtins() -> dict[str, type[Observer]]:
    return {cls.name: cls for cls in (MinMaxObserver, PercentileObserver, EntropyObserver, MSEObserver,
                                          AutoObserver)}


OBSERVERS: Registry[type[Observer]] = Registry("observer", "qtool_register_observers", builtins=_builtins)


def settings_read(name: str) -> set[str]:
    """The [calibration] settings an observer spec (``"auto"``, ``"percentile:99.9"``) takes from the defaults
    :func:`make_observer` is given: its constructor's arguments, but the one its spec sets."""
    base, _, argument = name.partition(":")
    accepted = set(inspect.signature(OBSERVERS.get(base)).parameters) - {"scheme"}
    return accepted - ({OBSERVERS.get(base).option} if argument else set())


def make_observer(name: str, scheme: QuantScheme, *, defaults: Mapping[str, Any] | None = None,
                  **options) -> Observer:
    """A new observer for ``scheme``.

    ``name`` may carry the observer's main option after a colon, e.g.
    ``"percentile:99.9"`` (``percentile=99.9``) or ``"mse:256"``. ``options``
    must be constructor arguments of the observer; ``defaults`` are passed only
    to observers that take them (one set of settings for every observer).
    """
    base, _, argument = name.partition(":")
    cls = OBSERVERS.get(base)
    if not (isinstance(cls, type) and issubclass(cls, Observer)):
        raise PluginError(f"observer {base!r} is registered as {cls!r}, not a qtool Observer subclass")
    accepted = set(inspect.signature(cls).parameters) - {"scheme"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise CalibrationError(f"observer {base!r} takes no option {unknown[0]!r} "
                               f"(options: {', '.join(sorted(accepted)) or 'none'})")
    options = {**{k: v for k, v in (defaults or {}).items() if k in accepted}, **options}
    if argument:
        if cls.option is None:
            raise CalibrationError(f"observer {base!r} takes no option, got {name!r}")
        try:
            options[cls.option] = float(argument)
        except ValueError:
            raise CalibrationError(f"observer {name!r}: {cls.option} must be a number, got {argument!r}") from None
    return cls(scheme, **options)


__all__ = [
    "AutoObserver", "DEFAULT_BINS", "OBSERVERS", "ChannelHistogram", "EntropyObserver", "HistogramObserver",
    "MSEObserver",
    "MinMaxObserver", "Observer", "PercentileObserver", "RunningHistogram", "entropy_threshold", "make_observer",
]
