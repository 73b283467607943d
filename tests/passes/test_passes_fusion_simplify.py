"""QuantizeFusion and QuantizeSimplify: which configs share one quantization point."""

from __future__ import annotations

import numpy as np
from onnx import helper
from passes_helpers import graph_of, init, run, tensor
from qtool.passes.dispatch import Dispatch
from qtool.passes.quantize_fusion import QuantizeFusion
from qtool.passes.quantize_simplify import QuantizeSimplify
from qtool.quant import QuantizationState

RNG = np.random.default_rng(2)
S = QuantizationState


def _conv(name: str, x: str, y: str, channels: int = 4) -> tuple:
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, pads=[1, 1, 1, 1])
    return node, [init(f"{name}.w", RNG.normal(size=(channels, 4, 3, 3))), init(f"{name}.b", RNG.normal(size=channels))]


def _graph(*parts, outputs=("y",)):
    nodes, inits = [], []
    for part in parts:
        if isinstance(part, tuple):
            nodes.append(part[0])
            inits += part[1]
        else:
            nodes.append(part)
    return graph_of(nodes, [tensor("x", [1, 4, 6, 6])], [tensor(o, None) for o in outputs], inits)


def _plan(graph, config):
    return run([Dispatch(config), QuantizeFusion(config), QuantizeSimplify()], graph)


def test_conv_relu_share_one_quantization_point(make_config):
    graph = _graph(_conv("c1", "x", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"), _conv("c2", "r", "y"))

    runs = _plan(graph, make_config())

    c1, relu, c2 = (graph.operations[n] for n in ("c1", "relu", "c2"))
    assert runs["QuantizeFusion"].details["fused"] == ["c1 + relu"]
    for tqc in (c1.quant.outputs[0], relu.quant.inputs[0]):
        assert tqc.state is S.FP32 and tqc.notes["reason"] == "fused with relu" and not tqc.is_settled
    assert relu.quant.outputs[0].state is S.INITIAL
    assert c2.quant.inputs[0].dominator is relu.quant.outputs[0]


def test_no_fusion_when_the_output_has_another_reader_or_fusion_is_off(make_config):
    graph = _graph(_conv("c1", "x", "a"), helper.make_node("Relu", ["a"], ["y"], name="relu"),
                   helper.make_node("Sigmoid", ["a"], ["z"], name="other"), outputs=("y", "z"))
    _plan(graph, make_config())
    assert graph.operations["c1"].quant.outputs[0].state is S.INITIAL

    graph = _graph(_conv("c1", "x", "a"), helper.make_node("Relu", ["a"], ["y"], name="relu"))
    runs = _plan(graph, make_config(fusion={"fuse_activations": False}))
    assert runs["QuantizeFusion"].details["fused"] == []
    assert graph.operations["relu"].quant.inputs[0].dominator is graph.operations["c1"].quant.outputs[0]


def test_passive_op_shares_its_input_config(make_config):
    graph = _graph(_conv("c1", "x", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"),
                   helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2]), _conv("c2", "p", "y"))

    _plan(graph, make_config())

    source = graph.operations["relu"].quant.outputs[0]
    pool = graph.operations["pool"]
    assert pool.quant.inputs[0].dominator is source and pool.quant.outputs[0].dominator is source
    assert pool.quant.outputs[0].state is S.OVERLAPPED
    assert graph.operations["c2"].quant.inputs[0].dominator is source


def test_concat_inputs_follow_their_producers_and_its_output_stays_its_own(make_config):
    graph = _graph(_conv("c1", "x", "a"), _conv("c2", "x", "b"),
                   helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1), _conv("c3", "cat", "y", 4))
    graph.variables["c3.w"].value = RNG.normal(size=(4, 8, 3, 3)).astype(np.float32)

    _plan(graph, make_config())

    cat = graph.operations["concat"]
    assert cat.quant.inputs[0].dominator is graph.operations["c1"].quant.outputs[0]
    assert cat.quant.inputs[1].dominator is graph.operations["c2"].quant.outputs[0]
    assert cat.quant.outputs[0].state is S.INITIAL and not cat.quant.outputs[0].is_overlapped


def test_readers_with_the_producers_scheme_share_it_others_stay_separate(make_config):
    graph = _graph(_conv("c1", "x", "a"), _conv("c2", "a", "y"), _conv("c3", "a", "z"), outputs=("y", "z"))
    config = make_config(override=[{"op_name": "c3", "activation": {"bits": 4}}])

    runs = _plan(graph, config)

    written = graph.operations["c1"].quant.outputs[0]
    same, other = graph.operations["c2"].quant.inputs[0], graph.operations["c3"].quant.inputs[0]
    assert same.dominator is written and same.state is S.OVERLAPPED
    assert other.state is S.INITIAL and not other.is_overlapped and other.scheme.num_of_bits == 4
    assert "a" in runs["QuantizeSimplify"].details["shared"]


def test_readers_of_a_graph_input_share_the_first_readers_config(make_config):
    graph = _graph(_conv("c1", "x", "y"), _conv("c2", "x", "z"), outputs=("y", "z"))

    _plan(graph, make_config())

    first, second = (graph.operations[n].quant.inputs[0] for n in ("c1", "c2"))
    assert first.state is S.INITIAL and second.dominator is first


def test_an_activation_outside_fused_activations_is_quantized_on_both_sides(make_config):
    graph = _graph(_conv("c1", "x", "a"), helper.make_node("HardSwish", ["a"], ["h"], name="hswish"),
                   _conv("c2", "h", "b"), helper.make_node("Relu", ["b"], ["y"], name="relu"))

    runs = _plan(graph, make_config(fusion={"fused_activations": ["Relu", "Clip"]}))

    c1, hswish = graph.operations["c1"], graph.operations["hswish"]
    assert runs["QuantizeFusion"].details["fused"] == ["c2 + relu"]
    assert c1.quant.outputs[0].state is S.INITIAL and hswish.quant.outputs[0].state is S.INITIAL
    assert hswish.quant.inputs[0].dominator is c1.quant.outputs[0]


def _matmuls(tail: str, y_shape):
    """x [2, 4] -> MatMul m1 -> a, then ``tail`` reads a: "matmul" (m2), "reduce" (ReduceMean), or "add" (+ bias)."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1")]
    inits = [init("w1", RNG.normal(size=(4, 4))), init("w2", RNG.normal(size=(4, 4))), init("b", RNG.normal(size=4))]
    nodes.append({"matmul": helper.make_node("MatMul", ["a", "w2"], ["y"], name="m2"),
                  "reduce": helper.make_node("ReduceMean", ["a"], ["y"], name="mean"),
                  "add": helper.make_node("Add", ["a", "b"], ["y"], name="bias")}[tail])
    return graph_of(nodes, [tensor("x", [2, 4])], [tensor("y", y_shape)], inits)


def test_a_float_output_op_read_by_no_quantized_op_keeps_its_output_float(make_config):
    config = make_config(fusion={"float_outputs": ["MatMul"]})
    graph = _matmuls("reduce", None)
    runs = _plan(graph, config)
    written = graph.operations["m1"].quant.outputs[0]
    assert runs["QuantizeFusion"].details["float_outputs"] == ["m1"]
    assert written.state is S.FP32 and written.notes["reason"] == "float output: no quantized op reads it"

    graph = _matmuls("matmul", None)  # m2 reads a quantized; m2's own output is a graph output nobody quantizes
    runs = _plan(graph, config)
    assert runs["QuantizeFusion"].details["float_outputs"] == ["m2"]
    assert graph.operations["m1"].quant.outputs[0].state is S.INITIAL

    graph = _matmuls("reduce", None)  # not asked for: unchanged
    _plan(graph, make_config())
    assert graph.operations["m1"].quant.outputs[0].state is S.INITIAL


def test_a_matmul_that_a_runtime_folds_with_its_bias_add_keeps_its_output_quantized(make_config):
    """ONNX Runtime folds MatMul + Add (2-D input, 1-D bias) into a float Gemm before it looks for integer kernels."""
    graph = _matmuls("add", [2, 4])
    runs = _plan(graph, make_config(fusion={"float_outputs": ["MatMul"]}))
    assert runs["QuantizeFusion"].details["float_outputs"] == []
    assert graph.operations["m1"].quant.outputs[0].state is S.INITIAL


def test_any_activation_fuses_into_an_op_that_writes_float(make_config):
    """A MatMul's integer kernel can write float, so a Sigmoid after it fuses although fused_activations lacks it."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1"),
             helper.make_node("Sigmoid", ["a"], ["s"], name="sig"), helper.make_node("MatMul", ["s", "w2"], ["y"],
                                                                                    name="m2")]
    graph = graph_of(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])],
                     [init("w1", RNG.normal(size=(4, 4))), init("w2", RNG.normal(size=(4, 4)))])
    fusion = {"fused_activations": ["Relu", "Clip"], "float_outputs": ["MatMul"]}
    runs = _plan(graph, make_config(fusion=fusion))
    assert runs["QuantizeFusion"].details["fused"] == ["m1 + sig"]

    graph = graph_of(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])],
                     [init("w1", RNG.normal(size=(4, 4))), init("w2", RNG.normal(size=(4, 4)))])
    runs = _plan(graph, make_config(fusion={"fused_activations": ["Relu", "Clip"]}))
    assert runs["QuantizeFusion"].details["fused"] == []


def _head(tail: str):
    """Conv -> Sigmoid (quantized on both sides) -> Reshape -> Transpose -> ``tail``: "mul" (a float Mul with a
    constant, a detector's box arithmetic), "conv" (a quantized Conv reads it), "output" (a graph output); "mid":
    Conv -> Sigmoid -> float Mul -> Conv (a squeeze-excitation's gate)."""
    shape = init("shape", np.array([1, 4, 6, 6] if tail == "conv" else [1, 4, 36]))
    nodes = [_conv("c1", "x", "a"), helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
             (helper.make_node("Reshape", ["s", "shape"], ["r"], name="reshape"), [shape]),
             helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 2, 1])]
    if tail == "mul":
        nodes.append((helper.make_node("Mul", ["t", "k"], ["y"], name="mul"), [init("k", np.array([8.0]))]))
    elif tail == "conv":
        nodes[-1] = _conv("c2", "r", "y")
    elif tail == "mid":  # a float Mul reads it, then a quantized Conv reads the Mul's result
        nodes[-2:] = [(helper.make_node("Mul", ["s", "k"], ["m"], name="mul"), [init("k", np.array([8.0]))]),
                      _conv("c2", "m", "y")]
    else:
        nodes[-1] = helper.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[0, 2, 1])
    return _graph(*nodes)


def test_an_output_only_float_ops_read_stays_float_with_the_data_movement_after_it(make_config):
    """float_unread: the Sigmoid's output and the Reshape/Transpose that pass it on to a float Mul are not rounded
    (a YOLO-style head 55.5 -> 74.9 dB on ONNX Runtime); the Sigmoid's input still ends the Conv's integer kernel."""
    dispatch = {"quantize_op_types": ["Conv", "Sigmoid"]}  # the Mul runs float, as on ONNX Runtime
    config = make_config(dispatch=dispatch, fusion={"fused_activations": ["Relu"], "float_unread": True})
    for tail in ("mul", "output"):
        graph = _head(tail)
        runs = _plan(graph, config)
        assert runs["QuantizeFusion"].details["float_outputs"] == ["sig"], tail
        sig = graph.operations["sig"].quant
        assert sig.outputs[0].state is S.FP32
        assert sig.outputs[0].notes["reason"] == "float output: no quantized op reads it"
        assert sig.inputs[0].state is not S.FP32  # the Conv's output is quantized: QLinearConv
        for name in ("reshape", "transpose"):
            quant = graph.operations[name].quant
            assert quant is None or all(t is None or t.state is S.FP32 for t in (*quant.inputs, *quant.outputs))

    for tail in ("conv", "mid"):  # a quantized Conv reads it, or reads what a float op computes of it: unchanged
        graph = _head(tail)
        assert _plan(graph, config)["QuantizeFusion"].details["float_outputs"] == [], tail
        assert graph.operations["sig"].quant.outputs[0].state is S.INITIAL

    graph = _head("mul")  # not asked for: unchanged
    _plan(graph, make_config(dispatch=dispatch, fusion={"fused_activations": ["Relu"]}))
    assert graph.operations["sig"].quant.outputs[0].state is S.INITIAL

    graph = _head("output")  # a part of a model quantized by parts (--by-blocks): a later part reads its outputs
    graph.part_of = "model.onnx"
    assert _plan(graph, config)["QuantizeFusion"].details["float_outputs"] == []
    assert graph.operations["sig"].quant.outputs[0].state is S.INITIAL

    graph = _head("mul")  # fused into the Conv, the Sigmoid's output is the integer kernel's (QLinearConv's)
    fused = make_config(dispatch=dispatch, fusion={"fused_activations": ["Relu", "Sigmoid"], "float_unread": True})
    assert _plan(graph, fused)["QuantizeFusion"].details["float_outputs"] == []
    assert graph.operations["sig"].quant.outputs[0].state is S.INITIAL
