"""CrossLayerEqualization: exact in float (checked with onnxruntime), and it fixes badly scaled channels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
import torch
from accuracy_helpers import export, ort_outputs, outputs, quantize, samples, snr_db
from onnx import TensorProto, helper, numpy_helper
from qtool.cli.main import main
from qtool.passes.accuracy.channels import grouped
from qtool.passes.accuracy.equalization import CrossLayerEqualization
from qtool.passes.accuracy.options import AccuracyError
from torch import nn

PER_TENSOR_WEIGHTS = {"activation": "float", "weight": {"granularity": "per_tensor"}}


def out_ranges(op) -> np.ndarray:
    """max |w| per output channel of the layer's weight."""
    return np.abs(grouped(op, op.inputs[1].value)).max(axis=(2, 3)).reshape(-1)


def in_ranges(op) -> np.ndarray:
    """max |w| per input channel of the layer's weight."""
    return np.abs(grouped(op, op.inputs[1].value)).max(axis=(1, 3)).reshape(-1)


class Mobile(nn.Module):
    """Conv -> Relu -> depthwise Conv -> Relu -> pointwise Conv, with channels scaled far apart (same function)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        f = torch.tensor([30.0, 1, 0.05, 1, 8, 0.2, 1, 0.02])
        g = torch.tensor([0.1, 20, 1, 0.03, 1, 5, 1, 1])
        with torch.no_grad():
            self.conv.weight *= f[:, None, None, None]
            self.conv.bias *= f
            self.dw.weight *= (g / f)[:, None, None, None]
            self.dw.bias *= g
            self.pw.weight /= g[None, :, None, None]

    def forward(self, x):
        return self.pw(torch.relu(self.dw(torch.relu(self.conv(x)))))


@pytest.fixture
def data():
    return samples((3, 8, 8), 32)


def test_float_function_unchanged_and_ranges_equal(tmp_path, data):
    graph = export(Mobile(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
    want = ort_outputs(graph, data)
    result = CrossLayerEqualization()(graph)
    assert result.details["pairs"] == ["/conv/Conv -> /dw/Conv", "/dw/Conv -> /pw/Conv"]
    got = ort_outputs(graph, data)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    pw, dw = graph.operations["/pw/Conv"], graph.operations["/dw/Conv"]
    np.testing.assert_allclose(out_ranges(dw), in_ranges(pw), rtol=1e-3)


def _chain(path, group: int) -> qtool.Graph:
    """conv1 -> Relu -> conv2 (``group`` groups) -> Relu -> conv3, 8 channels between, each channel's weights
    scaled by e^-4 .. e^4."""
    rng = np.random.default_rng(3)

    def weight(shape, axis):
        spread = np.exp(rng.uniform(-4, 4, shape[axis])).reshape([-1 if a == axis else 1 for a in range(4)])
        return numpy_helper.from_array((rng.standard_normal(shape) * spread).astype(np.float32))

    params = {"w1": weight((8, 3, 3, 3), 0), "w2": weight((8, 8 // group, 3, 3), 0), "w3": weight((4, 8, 1, 1), 1)}
    params.update({f"b{i}": numpy_helper.from_array(rng.standard_normal(n).astype(np.float32))
                   for i, n in ((1, 8), (2, 8), (3, 4))})
    for name, tensor in params.items():
        tensor.name = name
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="conv2", pads=[1] * 4, group=group),
             helper.make_node("Relu", ["h2"], ["a2"]),
             helper.make_node("Conv", ["a2", "w3", "b3"], ["y"], name="conv3")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    graph = helper.make_graph(nodes, "chain", [x], [y], list(params.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return qtool.load(path)


@pytest.mark.parametrize("group", [1, 2, 8])  # the middle layer plain, grouped, depthwise
def test_chain_of_three_reaches_equal_ranges_and_keeps_the_function(tmp_path, data, group):
    graph = _chain(tmp_path / "chain.onnx", group)
    want = ort_outputs(graph, data)
    first, middle, last = (graph.operations[name] for name in ("conv1", "conv2", "conv3"))
    assert np.abs(np.log(out_ranges(middle) / in_ranges(last))).max() > 2  # far apart before
    result = CrossLayerEqualization(iterations=500, tolerance=1e-9)(graph)
    assert result.details["pairs"] == ["conv1 -> conv2", "conv2 -> conv3"] and 2 < result.details["sweeps"] < 500
    for a, b in ((first, middle), (middle, last)):
        np.testing.assert_allclose(out_ranges(a), in_ranges(b), rtol=1e-5)
    np.testing.assert_allclose(ort_outputs(graph, data), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_per_tensor_weight_error_drops(tmp_path, data):
    snr = {}
    for equalize in (False, True):
        graph = export(Mobile(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
        reference = ort_outputs(graph, data)
        quantize(graph, PER_TENSOR_WEIGHTS, data, before=[CrossLayerEqualization()] if equalize else [])
        snr[equalize] = snr_db(outputs(graph, data), reference)
    assert snr[False] < 20 and snr[True] > snr[False] + 25, snr  # measured 15.1 -> 54.3 dB


def _exported_snr(path, data, reference) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return snr_db(np.concatenate([session.run(None, batch)[0] for batch in data]), reference)


def test_on_by_default_for_onnxruntime_and_can_be_turned_off(tmp_path, data):
    """Per-tensor activations gain too: equalizing weight ranges evens out the channels between the layers."""
    graph = export(Mobile(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
    reference = ort_outputs(graph, data)
    snr, ran = {}, {}
    for label, config in (("default", None), ("off", {"accuracy": {"equalization": False}})):
        output = tmp_path / f"{label}.onnx"
        result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", data, config=config, output=output)
        ran[label] = {p["name"]: p["modified"] for p in result.summary["passes"]}
        snr[label] = _exported_snr(output, data, reference)
    assert ran["default"]["CrossLayerEqualization"] is True and "CrossLayerEqualization" not in ran["off"]
    assert snr["off"] < 20 and snr["default"] > snr["off"] + 20, snr  # measured 14.1 -> 44.4 dB


def test_cli_says_it_runs_and_the_config_turns_it_off(tmp_path, data, capsys):
    export(Mobile(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([batch["x"] for batch in data]))
    off = tmp_path / "off.toml"
    off.write_text("[accuracy]\nequalization = false\n")
    printed = {}
    for label, extra in (("default", []), ("off", ["--config", str(off)])):
        model = str(tmp_path / "m.onnx")
        assert main(["explain", model, "--platform", "onnxruntime", *extra]) == 0
        assert main(["quantize", model, "--platform", "onnxruntime", "--calib", str(tmp_path / "calib.npz"),
                     "-o", str(tmp_path / f"{label}_q.onnx"), *extra]) == 0
        captured = capsys.readouterr()
        printed[label] = " ".join((captured.out + captured.err).split())
    assert "accuracy passes: equalization" in printed["default"] and "CrossLayerEqualization" in printed["default"]
    assert "accuracy passes: channel_split, outlier_outputs, fallback" in printed["off"]
    assert "CrossLayerEqualization" not in printed["off"]


@pytest.mark.parametrize("rank", [2, 3])  # 2-D input: Gemm pairs; 3-D: MatMul + bias Add pairs
def test_linear_pairs_exact(tmp_path, rank):
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(6, 12), nn.LeakyReLU(0.1), nn.Linear(12, 4))
    with torch.no_grad():
        mlp[0].weight[3] *= 40
        mlp[0].bias[3] *= 40
    shape = (6,) if rank == 2 else (5, 6)
    graph = export(mlp, torch.zeros(1, *shape), tmp_path / "mlp.onnx")
    assert {op.op_type for op in graph.operations.values()} >= ({"Gemm"} if rank == 2 else {"MatMul", "Add"})
    data = samples(shape, 16)
    want = ort_outputs(graph, data)
    result = CrossLayerEqualization()(graph)
    assert len(result.details["pairs"]) == 1
    first = graph.operations[result.details["pairs"][0].split(" -> ")[0]]
    second = graph.operations[result.details["pairs"][0].split(" -> ")[1]]
    assert out_ranges(first).max() < 0.5 * np.abs(mlp[0].weight.detach().numpy()).max()
    np.testing.assert_allclose(out_ranges(first), in_ranges(second), rtol=1e-5)
    np.testing.assert_allclose(ort_outputs(graph, data), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_leaves_non_homogeneous_and_shared_outputs(tmp_path):
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Conv2d(3, 3, 1) for _ in range(4))

        def forward(self, x):
            clipped = self.b(nn.functional.relu6(self.a(x)))  # Clip(0, 6): not homogeneous
            shared = self.c(x)
            return clipped + self.d(shared) + shared  # c's output read twice

    graph = export(Branches(), torch.zeros(1, 3, 4, 4), tmp_path / "b.onnx")
    before = {name: var.value.copy() for name, var in graph.variables.items() if var.is_parameter}
    result = CrossLayerEqualization()(graph)
    assert not result.modified and result.details["pairs"] == []
    assert all(np.array_equal(graph.variables[n].value, v) for n, v in before.items())


def test_leaves_half_precision_layers(tmp_path):
    """A float16 pair keeps its weights bit for bit: rescaled, they would be rounded again (the written model,
    whose layers runtimes keep in float16, differed from the user's by 70 dB), and nothing would be gained."""
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        mlp[0].weight[3] *= 40
    graph = export(mlp.half(), torch.zeros(1, 6, dtype=torch.float16), tmp_path / "half.onnx")
    before = {name: var.value.copy() for name, var in graph.variables.items() if var.is_parameter}
    assert any(v.dtype == np.float16 for v in before.values())
    result = CrossLayerEqualization()(graph)
    assert not result.modified and result.details["pairs"] == []
    assert all(np.array_equal(graph.variables[n].value, v) for n, v in before.items())


def test_options_checked():
    with pytest.raises(AccuracyError, match="accuracy.equalization.iterations"):
        CrossLayerEqualization(iterations=0)
