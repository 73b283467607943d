"""The default order, RuntimeCalibration, and mixed precision through every pass."""

from __future__ import annotations

import pytest
import torch
from passes_helpers import export, outputs, random_samples, relative_error, run
from qtool.calibration import load_calibration_data
from qtool.passes import PassError, PassResult
from qtool.passes.order import default_passes, planning_passes
from qtool.passes.runtime_calibration import RuntimeCalibration
from qtool.quant import QuantizationState

SAMPLES = random_samples((1, 3, 8, 8), count=16)


class Chain(torch.nn.Module):
    """Three conv + relu stages and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stages = torch.nn.ModuleList(torch.nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8))
        self.head = torch.nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):
        for conv in self.stages:
            x = torch.relu(conv(x))
        return self.head(torch.flatten(x, 1))


@pytest.fixture
def chain(tmp_path):
    return export(Chain(), torch.randn(1, 3, 8, 8), tmp_path / "chain.onnx")


def test_default_order_is_the_documented_one(make_config):
    names = [p.label for p in default_passes(make_config(), SAMPLES)]

    assert names == ["GraphSimplify", "Dispatch", "QuantizeFusion", "QuantizeSimplify", "ParameterQuantize",
                     "RuntimeCalibration", "QuantAlignment", "PassiveParameterQuantize", "Baking"]
    assert [p.label for p in planning_passes(make_config())] == names[:4]


def test_runtime_calibration_settles_every_activation(chain, make_config):
    data = load_calibration_data(SAMPLES, chain)
    passes = [*planning_passes(make_config()), RuntimeCalibration(data)]

    runs = run(passes, chain)

    assert runs["RuntimeCalibration"].details["samples"] == len(SAMPLES)
    activations = [t for op in chain.operations.values() if op.quant for t in op.quant.all_configs()
                   if t.role == "activation" and t.state is not QuantizationState.FP32]
    assert activations and all(t.dominator.state is QuantizationState.ACTIVATED for t in activations)


def test_runtime_calibration_postcondition_names_the_tensor(chain, make_config):
    class Skipping(RuntimeCalibration):
        def call(self, graph):
            return PassResult(graph, False)

    run(planning_passes(make_config()), chain)

    with pytest.raises(PassError, match="tensor 'x' at op '/stages.0/Conv' was not calibrated"):
        Skipping(SAMPLES)(chain)


def test_mixed_precision_int8_int4_int16_runs_every_pass_and_stays_close_to_float(chain, make_config):
    reference = outputs(chain, SAMPLES, quantize=False)
    bits = {"/stages.0/*": 8, "/stages.1/*": 4, "/stages.2/*": 16}
    config = make_config(override=[{"op_name": glob, "activation": {"bits": b}} for glob, b in bits.items()])

    runs = run(default_passes(config, SAMPLES), chain)

    assert len(runs) == 9
    convs = [op for op in chain.topological_order() if op.op_type == "Conv"]
    assert [c.quant.inputs[0].scheme.num_of_bits for c in convs] == [8, 4, 16]
    relus = [op for op in chain.topological_order() if op.op_type == "Relu"]
    for relu, conv in zip(relus, convs[1:], strict=False):
        assert conv.quant.inputs[0].dominator is not relu.quant.outputs[0]  # requantized between precisions
    states = {t.dominator.state for op in chain.operations.values() if op.quant for t in op.quant.all_configs()}
    assert QuantizationState.INITIAL not in states and QuantizationState.PASSIVE_INIT not in states
    error = relative_error(outputs(chain, SAMPLES), reference)
    assert error < 0.15, error
