"""Dispatch: the quantized/float decision with its reason, and the INITIAL configs it creates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from passes_helpers import export, graph_of, init, tensor
from qtool.passes.dispatch import Dispatch
from qtool.quant import QuantizationState

RNG = np.random.default_rng(1)


class SmallCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.reshape(y.shape[0], -1))


@pytest.fixture
def cnn(tmp_path):
    return export(SmallCnn(), torch.randn(1, 3, 8, 8), tmp_path / "cnn.onnx")


def _by_type(graph, op_type):
    return [op for op in graph.topological_order() if op.op_type == op_type]


def test_torch_cnn_decisions_and_reasons(cnn, make_config):
    Dispatch(make_config(), platform="testplat")(cnn)

    conv, relu, pool, gemm = (_by_type(cnn, t)[0] for t in ("Conv", "Relu", "MaxPool", "Gemm"))
    assert conv.quant.quantized and "quantize_op_types" in conv.quant.reason
    assert relu.quant.quantized and relu.quant.reason == f"activation after quantized {conv.name}"
    assert pool.quant.quantized and pool.quant.reason.startswith("passive")
    assert gemm.quant.quantized
    for op_type in ("Shape", "Gather", "Unsqueeze", "Concat"):
        op = _by_type(cnn, op_type)[0]
        assert not op.quant.quantized and op.quant.reason == "shape/index computation"
        assert op.quant.all_configs() == []
    reshape = _by_type(cnn, "Reshape")[0]
    assert reshape.quant.quantized and reshape.quant.inputs[1] is None  # the shape operand
    assert all(t.state is QuantizationState.INITIAL for op in (conv, relu, pool, gemm) for t in
               (c for c in op.quant.all_configs() if c.role != "bias"))


def test_conv_roles_axes_and_int32_bias(cnn, make_config):
    Dispatch(make_config())(cnn)

    conv, gemm = _by_type(cnn, "Conv")[0], _by_type(cnn, "Gemm")[0]
    x, w, b = conv.quant.inputs
    assert (x.role, w.role, b.role) == ("activation", "weight", "bias")
    assert w.scheme.is_per_channel and w.scheme.channel_axis == 0
    assert b.state is QuantizationState.PASSIVE_INIT and b.scheme.num_of_bits == 32 and b.scheme.channel_axis == 0
    assert conv.quant.outputs[0].role == "activation"
    assert gemm.attributes["transB"] == 1 and gemm.quant.inputs[1].scheme.channel_axis == 0


@pytest.mark.parametrize(("node", "weight", "x_shape", "axis"), [
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="op"), (3, 5, 2, 2), [1, 3, 4, 4], 1),
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="op"), (4, 6), [2, 4], 1),
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="op", transB=1), (6, 4), [2, 4], 0),
    (helper.make_node("MatMul", ["x", "w"], ["y"], name="op"), (4, 6), [2, 4], 1),
    (helper.make_node("MatMul", ["w", "x"], ["y"], name="op"), (6, 4), [4, 2], 0),
], ids=["conv_transpose", "gemm", "gemm_transB", "matmul_xw", "matmul_wx"])
def test_weight_channel_axis(node, weight, x_shape, axis, make_config):
    graph = graph_of([node], [tensor("x", x_shape)], [tensor("y", None)],
                     [init("w", RNG.normal(size=weight))])

    Dispatch(make_config())(graph)

    op = graph.operations["op"]
    index = [v.name for v in op.inputs].index("w")
    tqc = op.quant.inputs[index]
    assert tqc.role == "weight" and tqc.scheme.channel_axis == axis
    assert op.quant.inputs[1 - index].role == "activation"


def _conv_chain(head: str):
    """x -> conv -> <head op> -> y."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node(head, ["c"], ["y"], name="head")]
    return graph_of(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", None)],
                    [init("w", RNG.normal(size=(3, 2, 1, 1))), init("b", RNG.normal(size=3))])


def test_excluded_op_names_its_glob(make_config):
    graph = _conv_chain("Sigmoid")

    Dispatch(make_config(dispatch={"exclude": ["co*"]}))(graph)

    conv = graph.operations["conv"]
    assert not conv.quant.quantized and "'co*'" in conv.quant.reason and "exclude" in conv.quant.reason
    assert conv.quant.all_configs() == []


def test_op_outside_the_platform_names_it(make_config):
    graph = _conv_chain("Softmax")

    Dispatch(make_config(), platform="testplat")(graph)

    head = graph.operations["head"]
    assert not head.quant.quantized
    assert head.quant.reason.startswith("not quantized on testplat") and "Softmax" in head.quant.reason


def test_bias_float_mode_leaves_the_bias_float(make_config):
    graph = _conv_chain("Relu")

    Dispatch(make_config(bias={"mode": "float"}))(graph)

    assert graph.operations["conv"].quant.inputs[2] is None


def test_a_float8_operand_leaves_the_bias_float(make_config):
    """int32 codes at s_in * s_w are an integer product's bias; explain showed one the export never wrote."""
    graph = _conv_chain("Relu")

    Dispatch(make_config(activation={"format": "fp8_e4m3"}, bias={"mode": "int32"}))(graph)

    assert graph.operations["conv"].quant.inputs[0].scheme.is_floating
    assert graph.operations["conv"].quant.inputs[2] is None


def test_float_activations_quantize_weights_only(make_config):
    graph = _conv_chain("Relu")

    Dispatch(make_config(activation="float"))(graph)

    conv = graph.operations["conv"]
    assert conv.quant.quantized
    assert conv.quant.inputs[0] is None and conv.quant.outputs[0] is None and conv.quant.inputs[2] is None
    assert conv.quant.inputs[1].role == "weight"


def test_passive_ops_need_quantized_tensors_on_both_sides(make_config):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="lead", perm=[0, 1, 3, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="middle"),
             helper.make_node("Gemm", ["f", "g"], ["o"], name="fc"),
             helper.make_node("Reshape", ["o", "shape"], ["y"], name="tail")]
    graph = graph_of(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", None)],
                     [init("w", RNG.normal(size=(3, 2, 1, 1))), init("g", RNG.normal(size=(48, 5))),
                      helper.make_tensor("shape", TensorProto.INT64, [2], [5, 1])])

    Dispatch(make_config())(graph)

    ops = graph.operations
    assert ops["middle"].quant.quantized and ops["middle"].quant.inputs[0].scheme == ops["conv"].quant.outputs[0].scheme
    assert not ops["lead"].quant.quantized and "not produced by a quantized op" in ops["lead"].quant.reason
    assert not ops["tail"].quant.quantized and "read by no quantized op" in ops["tail"].quant.reason


def test_between_ops_are_quantized_only_between_quantized_ops_on_scales_of_their_own(make_config):
    """A residual Add between Convs is quantized with an output config of its own; an Add that reads a constant (a
    bias) or whose output only a float op reads stays float, saying why."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node("Conv", ["a", "w2"], ["b"], name="conv2"),
             helper.make_node("Add", ["a", "b"], ["s"], name="residual"),
             helper.make_node("Conv", ["s", "w3"], ["c"], name="conv3"),
             helper.make_node("Add", ["c", "bias"], ["d"], name="bias_add"),
             helper.make_node("Conv", ["d", "w3"], ["e"], name="conv4"),
             helper.make_node("Add", ["e", "c"], ["f"], name="last"),
             helper.make_node("Softmax", ["f"], ["y"], name="soft")]
    weights = [init(name, RNG.normal(size=(2, 2, 1, 1))) for name in ("w1", "w2", "w3")]
    graph = graph_of(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 2, 4, 4])],
                     [*weights, init("bias", RNG.normal(size=(1, 2, 1, 1)))])
    config = make_config(dispatch={"quantize_op_types": ["Conv"], "between_op_types": ["Add"]})

    Dispatch(config)(graph)

    ops = graph.operations
    residual = ops["residual"].quant
    assert residual.quantized and residual.reason == "between quantized ops (dispatch.between_op_types)"
    assert residual.outputs[0] is not None and residual.outputs[0] is not ops["conv2"].quant.outputs[0]
    assert [c.role for c in residual.inputs] == ["activation", "activation"]
    assert ops["bias_add"].quant.reason == "Add is quantized only between quantized ops (an input is a constant)"
    assert ops["last"].quant.reason == "Add is quantized only between quantized ops (its output is read by no " \
                                       "quantized op)"
    assert not ops["bias_add"].quant.quantized and not ops["last"].quant.quantized


def test_resize_operands_and_constant_subgraphs_stay_float(make_config):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Resize", ["c", "", "scales"], ["r"], name="resize", mode="nearest"),
             helper.make_node("Transpose", ["m"], ["mt"], name="weight_prep", perm=[1, 0]),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "mt"], ["y"], name="matmul")]
    graph = graph_of(nodes, [tensor("x", [1, 2, 2, 2])], [tensor("y", None)],
                     [init("w", RNG.normal(size=(3, 2, 1, 1))), init("scales", [1, 1, 2, 2]),
                      init("m", RNG.normal(size=(4, 48)))])

    Dispatch(make_config(dispatch={"passive_op_types": ["Resize", "Flatten"]}))(graph)

    resize = graph.operations["resize"]
    assert resize.quant.quantized and resize.quant.inputs[0] is not None
    assert resize.quant.inputs[1] is None and resize.quant.inputs[2] is None
    prep = graph.operations["weight_prep"]
    assert not prep.quant.quantized  # and says what it is (a DeBERTa's constant projections read "shape/index")
    assert prep.quant.reason == "constant: computed from initializers alone (runtimes fold it)"
    assert graph.operations["matmul"].quant.inputs[1].role == "activation"  # computed, not a parameter


def test_every_op_gets_aligned_configs_and_a_reason(cnn, make_config):
    Dispatch(make_config())(cnn)

    for op in cnn.operations.values():
        assert op.quant.reason
        assert len(op.quant.inputs) == len(op.inputs) and len(op.quant.outputs) == len(op.outputs)


class Upsample(torch.nn.Module):
    """A Resize whose sizes torch computes from the input's shape (Shape, Gather, Mul, Cast, Concat...)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.first(x)
        y = torch.nn.functional.interpolate(y, size=(y.shape[2] * 2, y.shape[3] * 2), mode="nearest")
        return self.second(y)


def test_shape_subgraph_feeding_a_resize_stays_float(tmp_path, make_config):
    graph = export(Upsample(), torch.randn(1, 3, 4, 4), tmp_path / "up.onnx")

    Dispatch(make_config(dispatch={"passive_op_types": ["Resize"]}))(graph)

    computing = {"Conv", "Resize"}
    shape_ops = [op for op in graph.operations.values() if op.op_type not in computing]
    assert {op.op_type for op in shape_ops} >= {"Shape", "Gather", "Mul", "Cast", "Concat"}
    assert all(op.quant.reason == "shape/index computation" for op in shape_ops)
    resize = _by_type(graph, "Resize")[0]
    assert resize.quant.quantized and [t is not None for t in resize.quant.inputs] == [True, False, False, False]


def test_float_tensors_that_only_feed_shape_operands_are_shape_data(make_config):
    """A float graph input scaled into Resize's scales is shape data by use; the Conv's float data is not."""
    nodes = [helper.make_node("Mul", ["zoom", "two"], ["scales"], name="double"),
             helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize", mode="nearest"),
             helper.make_node("Conv", ["r", "w"], ["y"], name="conv")]
    graph = graph_of(nodes, [tensor("x", [1, 2, 2, 2]), tensor("zoom", [4])], [tensor("y", None)],
                     [init("w", RNG.normal(size=(3, 2, 1, 1))), init("two", 2.0)])

    Dispatch(make_config(dispatch={"passive_op_types": ["Resize"]}))(graph)

    assert graph.operations["double"].quant.reason == "shape/index computation"
    assert graph.operations["conv"].quant.quantized and graph.operations["conv"].quant.inputs[0] is not None


@pytest.mark.parametrize(("reader", "guarded"), [("Log", True), ("Reciprocal", True), ("Div", True),
                                                 ("Sqrt", False)])
def test_a_clip_above_zero_that_guards_a_pole_stays_float(make_config, reader, guarded):
    """log(clamp(mel, 1e-10)) of a log-mel front end: quantized, the Clip's output rounded its smallest values to 0
    and Log gave -inf (the Clip fused into the MatMul, its bound rounded onto the grid)."""
    inputs = ["eps", "clipped"] if reader == "Div" else ["clipped"]  # the Clip's output as the divisor
    graph = graph_of([helper.make_node("MatMul", ["x", "fb"], ["mel"], name="mm"),
                      helper.make_node("Clip", ["mel", "low"], ["clipped"], name="clamp"),
                      helper.make_node(reader, inputs, ["y"], name="pole")],
                     [tensor("x", [4, 8])], [tensor("y", [4, 6])],
                     [init("fb", np.abs(RNG.normal(size=(8, 6)))), init("low", 1e-10), init("eps", 1.0)])

    Dispatch(make_config(), platform="testplat")(graph)

    clamp = graph.operations["clamp"]
    assert clamp.quant.quantized is not guarded
    if guarded:
        assert f"keeps 0 from {reader} 'pole'" in clamp.quant.reason
    assert graph.operations["mm"].quant.quantized


def test_a_clip_guarding_the_numerator_or_from_zero_is_an_activation(make_config):
    """Only a lower bound above 0 in front of an input that is infinite at 0 keeps a Clip float."""
    graph = graph_of([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                      helper.make_node("Clip", ["h", "low"], ["numerator"], name="guard"),
                      helper.make_node("Div", ["numerator", "d"], ["q"], name="div"),
                      helper.make_node("MatMul", ["x", "w"], ["h2"], name="mm2"),
                      helper.make_node("Clip", ["h2", "zero"], ["relu6"], name="from_zero"),
                      helper.make_node("Log", ["relu6"], ["y"], name="log")],
                     [tensor("x", [4, 8])], [tensor("q", [4, 6]), tensor("y", [4, 6])],
                     [init("w", RNG.normal(size=(8, 6))), init("low", 1e-3), init("d", 2.0), init("zero", 0.0)])

    Dispatch(make_config(), platform="testplat")(graph)

    assert graph.operations["guard"].quant.quantized
    assert graph.operations["from_zero"].quant.quantized
