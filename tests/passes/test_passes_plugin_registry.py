"""Passes registered by a plugin run where the configuration's [[pass]] list puts them."""

import pytest

import qtool
from qtool.config import ConfigError
from qtool.passes import Pass, PassResult
from qtool.passes.registry import PASSES
from qtool.plugins import plugin_manager


class CountQuantizedTensors(Pass):
    """A plugin pass: records how many ops are quantized when it runs."""

    name = "CountQuantizedTensors"

    def __init__(self, label: str = "count", device: str = "cpu") -> None:
        self.tag, self.device = label, device

    def call(self, graph):
        quantized = sum(1 for op in graph.operations.values() if op.quant is not None and op.quant.quantized)
        return PassResult(graph, False, {"tag": self.tag, "device": self.device, "quantized": quantized})


class Plugin:
    @qtool.hookimpl
    def qtool_register_passes(self, register):
        register("count-quantized", CountQuantizedTensors)


@pytest.fixture
def registered():
    plugin = Plugin()
    plugin_manager().manager.register(plugin, name="test-pass-plugin")
    PASSES.clear()
    yield
    plugin_manager().manager.unregister(plugin)
    PASSES.clear()


def quantize(model, calib, entries):
    return qtool.quantize(model, "onnxruntime", calib, config={"pass": entries})


def test_a_registered_pass_runs_after_the_named_pass(registered, digits):
    model, calib, _ = digits
    result = quantize(model, calib, [{"name": "count-quantized", "after": "QuantAlignment",
                                      "options": {"label": "mine"}}])
    names = [r.name for r in result.pass_runs]
    assert names[names.index("QuantAlignment") + 1] == "CountQuantizedTensors"
    details = result.pass_runs[names.index("CountQuantizedTensors")].details
    assert details == {"tag": "mine", "device": "cpu", "quantized": result.summary["ops"]["quantized"]}


def test_bad_entries_are_named(registered, digits):
    model, calib, _ = digits
    with pytest.raises(ConfigError, match=r"pass\[0\]\.after: no pass named 'Nowhere'"):
        quantize(model, calib, [{"name": "count-quantized", "after": "Nowhere"}])
    with pytest.raises(ConfigError, match=r"pass\[0\]\.options"):
        quantize(model, calib, [{"name": "count-quantized", "after": "Baking", "options": {"bogus": 1}}])
    with pytest.raises(ConfigError, match=r"pass\[0\]\.name: unknown pass 'nope' .known: count-quantized"):
        quantize(model, calib, [{"name": "nope", "after": "Baking"}])
    with pytest.raises(ConfigError, match=r"pass\[0\].*needs 'after'"):
        quantize(model, calib, [{"name": "count-quantized"}])
