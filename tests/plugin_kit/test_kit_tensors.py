"""qtool.quantized_tensors: one entry per (tensor, dominator), in topological order."""

import numpy as np
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool import OpQuantConfig, QuantizationState, QuantScheme, TensorQuantizationConfig


def _graph():
    """x -> Conv -> y -> Relu -> r; r read by Add(r, r) -> out."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "r"], ["out"], name="add"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 2, 2])], [w])
    return qtool.ir.from_model_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _act(scale):
    tqc = TensorQuantizationConfig(QuantScheme.integer(8))
    tqc.set_params(scale, 0)
    return tqc


def _calibrated():
    graph = _graph()
    conv, relu, add = (graph.operations[n] for n in ("conv", "relu", "add"))
    weight = TensorQuantizationConfig(QuantScheme.integer(8, per_channel=True, channel_axis=0), role="weight")
    weight.set_params([0.1, 0.2], [0, 0])
    fused = TensorQuantizationConfig(QuantScheme.integer(8))
    fused.keep_float()
    conv.quant = OpQuantConfig([_act(0.5), weight], [fused])
    relu_out = _act(0.25)
    relu.quant = OpQuantConfig([None], [relu_out])
    readers = [TensorQuantizationConfig(QuantScheme.integer(8)) for _ in range(2)]
    for r in readers:
        r.overlap(relu_out)
    pending = TensorQuantizationConfig(QuantScheme.integer(8))
    add.quant = OpQuantConfig(readers, [pending])
    return graph


def test_walk_deduplicates_readers_and_skips_float_and_unsettled():
    found = [(t.op.name, t.side, t.index, t.tensor, t.role) for t in qtool.quantized_tensors(_calibrated())]
    assert found == [
        ("conv", "input", 0, "x", "activation"),
        ("conv", "input", 1, "w", "weight"),
        ("relu", "output", 0, "r", "activation"),
    ]


def test_unsettled_configs_are_listed_on_request_and_roles_filter():
    graph = _calibrated()
    names = [t.tensor for t in qtool.quantized_tensors(graph, roles=["activation"], settled=False)]
    assert names == ["x", "r", "out"]
    assert graph.operations["add"].quant.outputs[0].state is QuantizationState.INITIAL


def test_two_tensors_sharing_a_dominator_are_both_listed():
    graph = _calibrated()
    add = graph.operations["add"]
    add.quant.outputs[0].overlap(graph.operations["relu"].quant.outputs[0])
    assert [t.tensor for t in qtool.quantized_tensors(graph, roles=["activation"])] == ["x", "r", "out"]


def test_representable_range_per_tensor_and_per_channel():
    entries = {t.tensor: t for t in qtool.quantized_tensors(_calibrated())}
    lo, hi = entries["x"].range
    assert (lo, hi) == (-128 * 0.5, 127 * 0.5)
    lo, hi = entries["w"].range
    np.testing.assert_allclose(hi, [12.7, 25.4], rtol=1e-6)
    asym = TensorQuantizationConfig(QuantScheme.integer(8, signed=False, symmetric=False))
    asym.set_params(0.1, 10)
    lo, hi = qtool.representable_range(asym)
    np.testing.assert_allclose([lo, hi], [-1.0, 24.5], rtol=1e-6)
