"""The observer registry: built-ins, plugins through the hook, names with an option."""

from __future__ import annotations

import numpy as np
import pytest
import qtool
from qtool.calibration import OBSERVERS, CalibrationError, Observer, make_observer
from qtool.errors import UnknownNameError
from qtool.plugins import PluginError, plugin_manager
from qtool.quant import QuantScheme

INT8 = QuantScheme.integer(8)


class AbsMaxObserver(Observer):
    """A plugin's observer: symmetric range from the largest magnitude."""

    name = "absmax"

    def __init__(self, scheme) -> None:
        super().__init__(scheme)
        self.amax = 0.0

    def _observe_rows(self, rows, lo, hi, finite) -> None:
        self.amax = max(self.amax, float(np.maximum(-lo, hi).max()))

    def range(self):
        return np.float64(-self.amax), np.float64(self.amax)


class ObserverPlugin:
    def __init__(self, name: str, value) -> None:
        self.name, self.value = name, value

    @qtool.hookimpl
    def qtool_register_observers(self, register):
        register(self.name, self.value)


@pytest.fixture
def install():
    """install(name, value): register an in-process plugin for the test's duration."""
    manager = plugin_manager().manager
    installed = []

    def add(name, value):
        plugin = ObserverPlugin(name, value)
        manager.register(plugin, name=f"test-observer-{name}")
        installed.append(plugin)
        OBSERVERS.clear()

    yield add
    for plugin in installed:
        manager.unregister(plugin)
    OBSERVERS.clear()


def test_builtins_are_registered():
    assert {"minmax", "percentile", "kl", "mse"} <= set(OBSERVERS.names())


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown observer 'nope' \(known: auto, kl, minmax, mse, percentile"):
        make_observer("nope", INT8)


def test_a_plugin_adds_an_observer_through_the_hook(install):
    install("absmax", AbsMaxObserver)
    observer = make_observer("absmax", INT8)
    observer.observe(np.array([-3.0, 1.0]))
    assert observer.compute()[0] == pytest.approx(3 / 127)


def test_a_plugin_cannot_take_a_builtin_name(install, monkeypatch):
    monkeypatch.setenv("QTOOL_STRICT_PLUGINS", "1")
    install("minmax", AbsMaxObserver)
    with pytest.raises(PluginError, match="observer 'minmax' is registered twice"):
        OBSERVERS.names()


def test_a_registered_non_observer_is_refused(install):
    install("broken", object)
    with pytest.raises(PluginError, match="not a qtool Observer subclass"):
        make_observer("broken", INT8)


def test_spec_options_and_defaults():
    assert make_observer("mse:64", INT8).candidates == 64
    assert make_observer("percentile:99.9", INT8, defaults={"percentile": 99.0}).percentile == 99.9
    assert make_observer("percentile", INT8, defaults={"percentile": 99.0, "unrelated": 1}).percentile == 99.0
    assert isinstance(make_observer("minmax", INT8, defaults={"bins": 128}), Observer)
    with pytest.raises(CalibrationError, match="takes no option"):
        make_observer("minmax:3", INT8)
    with pytest.raises(CalibrationError, match="must be a number"):
        make_observer("percentile:high", INT8)
    with pytest.raises(CalibrationError, match="no option 'percentil'"):
        make_observer("percentile", INT8, percentil=99.0)
