"""measure: one float run and one simulated run per batch give what the separate measurements give."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.analysis import graphwise_error, layerwise_sensitivity, measure, output_error
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto
from qtool.passes.accuracy.running import run_watching
from qtool.report.distributions import ActivationHistograms
from qtool.testing import quantize_by_hand


def model(dead_branch: bool = False, argmax: bool = False):
    """x -> Conv -> Relu -> Conv -> y; where ``dead_branch``, a Conv on x that no graph output reads; where
    ``argmax``, the output is ArgMax(y) (integer)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (4, 3, 3, 3)), ("w2", (2, 4, 1, 1)), ("w3", (2, 3, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    if dead_branch:
        nodes.append(helper.make_node("Conv", ["x", "w3"], ["unread"], name="dead"))
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["y"], ["label"], name="argmax", axis=1))
        output = helper.make_tensor_value_info("label", TensorProto.INT64, None)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [output], weights)
    return quantize_by_hand(from_model_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])),
                            op_types={"Conv"})


def batches():
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(3)]


@pytest.mark.parametrize("kept_bytes", [None, 0])  # variants' outputs kept, or the float outputs computed first
def test_one_pass_gives_the_separate_measurements(kept_bytes, monkeypatch):
    from qtool.analysis import analysis

    if kept_bytes is not None:
        monkeypatch.setattr(analysis, "KEPT_BYTES", kept_bytes)
    graph = model()
    measured = measure(TorchExecutor(graph), batches())
    assert measured.graphwise == graphwise_error(TorchExecutor(graph), batches())
    assert measured.layerwise == layerwise_sensitivity(TorchExecutor(graph), batches())
    assert measured.layerwise_unmeasured is None
    assert measured.outputs == output_error(TorchExecutor(graph), batches())
    assert len(measured.layerwise) == 2


def test_the_histograms_fed_by_the_pass_are_those_of_a_watching_run():
    graph = model(dead_branch=True)
    alone = ActivationHistograms(graph)
    run_watching(TorchExecutor(graph), batches(), alone.unseen_ops(), alone.observe, quantize=False)
    in_pass, executor = ActivationHistograms(graph), TorchExecutor(graph)
    measure(executor, batches(), watch=in_pass.observe)
    assert [op.name for op in in_pass.unseen_ops()] == ["dead"]  # no graph output reads it: not in the pass
    run_watching(executor, batches(), in_pass.unseen_ops(), in_pass.observe, quantize=False)
    assert in_pass.entries() == alone.entries()
    assert {entry["op"] for entry in alone.entries()} == {"c1", "c2", "dead"}


def test_without_floating_point_output_the_rest_is_measured():
    """An ArgMax head: no layer-wise rows (and why), the graph-wise rows all the same."""
    graph = model(argmax=True)
    measured = measure(TorchExecutor(graph), batches())
    assert measured.layerwise == [] and "integer or boolean" in measured.layerwise_unmeasured
    assert measured.graphwise == graphwise_error(TorchExecutor(graph), batches())
    assert len(measured.graphwise) == 2 and measured.outputs == {}
