"""Graph-wise error and layer-wise sensitivity on a hand-quantized CNN."""

import math

import numpy as np
import pytest
import torch

import qtool
from qtool.analysis import ErrorAccumulator, graphwise_error, layerwise_sensitivity
from qtool.executor import TorchExecutor
from qtool.quant import QuantScheme
from qtool.testing import quantize_by_hand, retarget


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


@pytest.fixture
def graph(tmp_path):
    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    return quantize_by_hand(qtool.load(path), op_types={"Conv"})


def batches(n=3):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def conv_weight(graph, index):
    conv = [op for op in graph.topological_order() if op.op_type == "Conv"][index]
    return conv, conv.inputs[1].name


def test_accumulator_matches_direct_formulas():
    rng = np.random.default_rng(1)
    ref, test = rng.standard_normal(100), rng.standard_normal(100)
    acc = ErrorAccumulator()
    acc.update(torch.from_numpy(ref[:40]), torch.from_numpy(test[:40]))
    acc.update(torch.from_numpy(ref[40:]), torch.from_numpy(test[40:]))
    assert acc.snr_db == pytest.approx(10 * math.log10((ref**2).sum() / ((test - ref) ** 2).sum()))
    assert acc.cosine == pytest.approx(ref @ test / np.linalg.norm(ref) / np.linalg.norm(test))
    exact = ErrorAccumulator()
    exact.update(torch.ones(3), torch.ones(3))
    assert exact.snr_db == math.inf and exact.cosine == pytest.approx(1.0)


def test_layerwise_ranks_the_op_with_2_bit_weights_first(graph):
    conv, weight = conv_weight(graph, 1)
    retarget(graph, weight, QuantScheme.integer(2, per_channel=True, channel_axis=0))
    rows = layerwise_sensitivity(TorchExecutor(graph), batches())
    assert [r.op for r in rows][0] == conv.name
    assert rows[0].snr_db < rows[1].snr_db - 6  # clearly worse, not a coin toss
    assert all(-1 <= r.cosine <= 1 for r in rows)


def test_graphwise_error_is_cumulative_and_restores_the_executor(graph):
    executor = TorchExecutor(graph)
    executor.float_ops = {"something"}
    baseline = {r.op: r.snr_db for r in graphwise_error(executor, batches())}
    convs = [op for op in graph.topological_order() if op.op_type == "Conv"]
    assert set(baseline) == {op.name for op in convs}
    assert all(snr > 10 for snr in baseline.values())  # int8 everywhere: small error
    assert executor.quantize is True and executor.float_ops == {"something"}

    retarget(graph, convs[0].outputs[0].name, QuantScheme.integer(3, symmetric=False))
    executor.refresh()
    degraded = {r.op: r.snr_db for r in graphwise_error(executor, batches())}
    for op in convs:  # the coarse first output hurts it and everything downstream
        assert degraded[op.name] < baseline[op.name] - 3, op.name


def whole_runs(executor, batch, variants):
    """Each variant's outputs from a whole run in its mode, and the float outputs: what forks must equal."""
    feeds = {"x": torch.from_numpy(batch["x"])}
    with torch.inference_mode():
        with executor.mode(quantize=False):
            reference = executor.forward_torch(feeds)
        runs = []
        for variant in variants:
            with executor.mode(quantize=True, float_ops=variant):
                runs.append(executor.forward_torch(feeds))
    return reference, runs


def test_forward_variants_equal_whole_runs_bit_for_bit(graph):
    executor = TorchExecutor(graph)
    convs = [op.name for op in graph.topological_order() if op.op_type == "Conv"]
    variants = [set(convs) - {name} for name in convs] + [set(convs), set()]  # one op each, none, all
    batch = batches(1)[0]
    reference, expected = whole_runs(executor, batch, variants)
    seen, steps = {}, []
    executor.add_hook(lambda op, inputs, outputs: steps.append(op.name))
    with torch.inference_mode():
        got = executor.forward_variants({"x": torch.from_numpy(batch["x"])}, variants, seen.__setitem__)
    assert torch.equal(got["y"], reference["y"])
    assert sorted(seen) == list(range(len(variants)))
    for number, outputs in enumerate(expected):
        assert torch.equal(seen[number]["y"], outputs["y"]), variants[number]
    assert not torch.equal(seen[0]["y"], reference["y"])  # the variants do simulate
    whole = len(graph.operations) * (1 + len(variants))
    assert len(steps) < whole  # the float prefixes ran once, not once per variant


def test_layerwise_gives_the_same_numbers_whether_it_keeps_outputs_or_not(graph, monkeypatch):
    from qtool.analysis import analysis

    kept = layerwise_sensitivity(TorchExecutor(graph), batches())
    monkeypatch.setattr(analysis, "KEPT_BYTES", 0)  # the float outputs first, in one more run, every batch
    recomputed = layerwise_sensitivity(TorchExecutor(graph), batches())
    assert kept == recomputed and len(kept) == 3


def test_a_small_output_beside_a_large_one_counts_as_much():
    """Two heads: 'big' (x1000) and 'small' (x0.001). Pooled into one vector, the small head's Gemm read 160 dB,
    as if exact, and --min-snr ignored it; each output's SNR is measured, and the worst one counts."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(8, 8)) * k).astype(np.float32), n)
             for n, k in (("wb", 1000.0), ("ws", 0.001))]
    nodes = [helper.make_node("Gemm", ["x", "wb"], ["big"], name="gemm_big"),
             helper.make_node("Gemm", ["x", "ws"], ["small"], name="gemm_small")]
    model = helper.make_model(helper.make_graph(
        nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in ("big", "small")], inits))
    batches = [{"x": rng.normal(size=(4, 8)).astype(np.float32)} for _ in range(4)]
    graph = qtool.quantize(model, "onnxruntime", batches, calib_layout="feeds", config={"weight": {"bits": 4}}).graph
    rows = {row.op: row.snr_db for row in layerwise_sensitivity(TorchExecutor(graph), batches)}
    assert 10 < rows["gemm_small"] < 40 and 10 < rows["gemm_big"] < 40
    assert abs(rows["gemm_small"] - rows["gemm_big"]) < 10
