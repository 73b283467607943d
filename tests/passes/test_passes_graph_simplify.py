"""GraphSimplify: Identity/Dropout removal and BatchNormalization folding, checked against onnxruntime."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from passes_helpers import graph_of, init, tensor
from qtool.ir import to_model_proto
from qtool.passes.graph_simplify import GraphSimplify

RNG = np.random.default_rng(0)


def _ort(graph, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(to_model_proto(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _bn_inits(prefix: str, channels: int) -> list:
    return [init(f"{prefix}.gamma", RNG.uniform(0.5, 2.0, channels)), init(f"{prefix}.beta", RNG.normal(size=channels)),
            init(f"{prefix}.mean", RNG.normal(size=channels)), init(f"{prefix}.var", RNG.uniform(0.1, 3.0, channels))]


def _bn(inp: str, out: str, prefix: str = "bn") -> object:
    return helper.make_node("BatchNormalization", [inp, f"{prefix}.gamma", f"{prefix}.beta", f"{prefix}.mean",
                                                   f"{prefix}.var"], [out], name=prefix, epsilon=1e-3)


LAYERS = {
    "conv": ([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="layer", pads=[1, 1, 1, 1], group=2)],
             [init("w", RNG.normal(size=(6, 2, 3, 3))), init("b", RNG.normal(size=6))], (2, 4, 5, 5), 6, [2, 6, 5, 5]),
    "conv_no_bias": ([helper.make_node("Conv", ["x", "w"], ["c"], name="layer")],
                     [init("w", RNG.normal(size=(5, 3, 3, 3)))], (1, 3, 6, 6), 5, [1, 5, 4, 4]),
    "conv_transpose": ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], name="layer", group=2,
                                         strides=[2, 2])],
                       [init("w", RNG.normal(size=(4, 3, 2, 2))), init("b", RNG.normal(size=6))],
                       (1, 4, 3, 3), 6, [1, 6, 6, 6]),
    "gemm": ([helper.make_node("Gemm", ["x", "w", "b"], ["c"], name="layer", transB=1, beta=0.5, alpha=1.5)],
             [init("w", RNG.normal(size=(7, 4))), init("b", RNG.normal(size=7))], (3, 4), 7, [3, 7]),
    "gemm_no_trans": ([helper.make_node("Gemm", ["x", "w", "b"], ["c"], name="layer")],
                      [init("w", RNG.normal(size=(4, 7))), init("b", RNG.normal(size=(1, 7)))], (3, 4), 7, [3, 7]),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_batchnorm_folds_into_the_layer_and_matches_onnxruntime(kind):
    nodes, inits, x_shape, channels, y_shape = LAYERS[kind]
    graph = graph_of([*nodes, _bn("c", "y")], [tensor("x", list(x_shape))], [tensor("y", y_shape)],
                     [*inits, *_bn_inits("bn", channels)])
    x = RNG.normal(size=x_shape).astype(np.float32)
    expected = _ort(graph, x)

    result = GraphSimplify()(graph)

    assert result.modified and result.details["folded"] == ["bn -> layer"]
    assert [op.op_type for op in graph.operations.values()] == [nodes[0].op_type]
    assert graph.operations["layer"].outputs[0] is graph.outputs[0]
    assert not any(name.startswith("bn.") for name in graph.variables)
    np.testing.assert_allclose(_ort(graph, x), expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_stays_when_the_conv_output_has_another_reader():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y"),
             helper.make_node("Relu", ["c"], ["z"], name="relu")]
    graph = graph_of(nodes, [tensor("x", [1, 2, 3, 3])], [tensor("y", [1, 4, 3, 3]), tensor("z", [1, 4, 3, 3])],
                     [init("w", RNG.normal(size=(4, 2, 1, 1))), *_bn_inits("bn", 4)])

    result = GraphSimplify()(graph)

    assert not result.modified
    assert "bn" in graph.operations


def test_shared_weight_is_copied_not_scaled_in_place():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y"),
             helper.make_node("Conv", ["x", "w"], ["z"], name="other")]
    weight = RNG.normal(size=(4, 2, 1, 1))
    graph = graph_of(nodes, [tensor("x", [1, 2, 3, 3])], [tensor("y", [1, 4, 3, 3]), tensor("z", [1, 4, 3, 3])],
                     [init("w", weight), *_bn_inits("bn", 4)])
    x = RNG.normal(size=(1, 2, 3, 3)).astype(np.float32)
    session = ort.InferenceSession(to_model_proto(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})

    GraphSimplify()(graph)

    assert graph.operations["other"].inputs[1].name == "w"
    np.testing.assert_array_equal(graph.variables["w"].value, weight.astype(np.float32))
    session = ort.InferenceSession(to_model_proto(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, {"x": x}), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_identity_and_inference_dropout_are_removed_keeping_output_names():
    nodes = [helper.make_node("Identity", ["x"], ["a"], name="id"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d", "mask"], name="drop"),
             helper.make_node("Identity", ["d"], ["y"], name="id_out")]
    graph = graph_of(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])], [])
    x = RNG.normal(size=(2, 3)).astype(np.float32)

    result = GraphSimplify()(graph)

    assert sorted(result.details["removed"]) == ["drop", "id", "id_out"]
    assert list(graph.operations) == ["relu"]
    assert [v.name for v in graph.outputs] == ["y"]
    np.testing.assert_array_equal(_ort(graph, x), np.maximum(x, 0))


def test_training_dropout_and_input_to_output_identity_stay():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "train"], ["d"], name="drop"),
             helper.make_node("Identity", ["x"], ["y"], name="copy")]
    graph = graph_of(nodes, [tensor("x", [2, 3])], [tensor("d", [2, 3]), tensor("y", [2, 3])],
                     [init("ratio", 0.5), helper.make_tensor("train", 9, [], [True])])

    result = GraphSimplify()(graph)

    assert not result.modified
    assert sorted(graph.operations) == ["copy", "drop"]


@pytest.mark.parametrize("attributes, bias, folded", [
    ({"alpha": 0.5, "beta": 2.0}, True, True), ({"alpha": 1.5}, False, True), ({"beta": 3.0}, True, True),
    ({"beta": 3.0}, False, False),  # no bias: beta multiplies nothing, and ORT fuses such a Gemm already
])
def test_gemm_alpha_and_beta_fold_into_its_weight_and_bias(attributes, bias, folded):
    """ONNX Runtime fuses a quantized Gemm with a bias into QGemm only with alpha and beta 1 (its truth test:
    plugins/qtool-onnxruntime/tests/test_ort_truth_trust.py); the same function with them folded in."""
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    inits = [init("w", RNG.normal(size=(4, 7))), init("b", RNG.normal(size=7))][:len(inputs) - 1]
    graph = graph_of([helper.make_node("Gemm", inputs, ["y"], name="layer", **attributes)],
                     [tensor("x", [3, 4])], [tensor("y", [3, 7])], inits)
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    expected = _ort(graph, x)

    result = GraphSimplify()(graph)

    assert result.details["gemm_scales_folded"] == (["layer"] if folded else [])
    gemm = graph.operations["layer"]
    assert ("alpha" in gemm.attributes or "beta" in gemm.attributes) != folded
    np.testing.assert_allclose(_ort(graph, x), expected, rtol=1e-6, atol=1e-6)


def test_a_gemm_whose_bias_is_computed_keeps_alpha_and_beta():
    graph = graph_of([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                      helper.make_node("Gemm", ["x", "w", "r"], ["y"], name="layer", alpha=2.0, beta=0.5)],
                     [tensor("x", [4, 4])], [tensor("y", [4, 4])], [init("w", RNG.normal(size=(4, 4)))])
    result = GraphSimplify()(graph)
    assert result.details["gemm_scales_folded"] == []
    assert graph.operations["layer"].attributes == {"alpha": 2.0, "beta": 0.5}


@pytest.mark.parametrize("equation, weight_shape, x_shape, y_shape", [
    ("bsd,df->bsf", (4, 6), (2, 3, 4), [2, 3, 6]),
    ("bsd,fd->bsf", (6, 4), (2, 3, 4), [2, 3, 6]),  # stored transposed, as TensorFlow's Dense kernel may be
    ("bd,df->bf", (4, 6), (3, 4), [3, 6]),
])
def test_a_dense_einsum_becomes_the_matmul_it_computes(equation, weight_shape, x_shape, y_shape):
    graph = graph_of([helper.make_node("Einsum", ["x", "w"], ["y"], name="dense", equation=equation)],
                     [tensor("x", list(x_shape))], [tensor("y", y_shape)], [init("w", RNG.normal(size=weight_shape))])
    x = RNG.normal(size=x_shape).astype(np.float32)
    expected = _ort(graph, x)

    result = GraphSimplify()(graph)

    dense = graph.operations["dense"]
    assert result.details["einsums_as_matmul"] == ["dense"] and dense.op_type == "MatMul"
    assert dense.inputs[1].value.shape == (4, 6) and dense.outputs[0] is graph.outputs[0]
    np.testing.assert_allclose(_ort(graph, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equation, weight_shape", [
    ("bsd,dd->bsd", (4, 4)),  # one letter twice: no MatMul
    ("bsd,df->bfs", (4, 6)),  # the output's axes in another order
    ("bsd,sf->bdf", (3, 6)),  # contracted over another axis than the last
    ("...d,df->...f", (4, 6)),  # an ellipsis: left as it is
])
def test_other_einsums_stay(equation, weight_shape):
    graph = graph_of([helper.make_node("Einsum", ["x", "w"], ["y"], name="e", equation=equation)],
                     [tensor("x", [2, 3, 4])], [tensor("y", None)], [init("w", RNG.normal(size=weight_shape))])
    result = GraphSimplify()(graph)
    assert result.details["einsums_as_matmul"] == [] and graph.operations["e"].op_type == "Einsum"


W = RNG.normal(size=(6, 4)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)  # float 8 values: every Cast is exact


def typed(name: str, value: np.ndarray):
    """An initializer of the array's own type (``init`` makes float32 ones)."""
    return numpy_helper.from_array(value, name)


FOLDED_CHAINS = {  # ops between a constant and a MatMul's weight input (x: (2, 4) -> (2, 6)), and their opset
    "transpose": ([helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0])], [init("w", W)], 17),
    "reshape_with_zero_and_minus_one": ([helper.make_node("Reshape", ["w", "s"], ["wt"])],
                                        [init("w", W.T.reshape(4, 2, 3)), typed("s", np.array([0, -1], np.int64))], 17),
    "cast_float16": ([helper.make_node("Cast", ["w"], ["wt"], to=1)], [typed("w", W.T.astype(np.float16))], 17),
    # a bfloat16- or float8-stored weight was quantized as an activation (Cast -> QuantizeLinear at every run)
    "cast_bfloat16": ([helper.make_node("Cast", ["w"], ["wt"], to=1)], [typed("w", W.T.astype(ml_dtypes.bfloat16))],
                      17),
    "cast_float8e4m3fn": ([helper.make_node("Cast", ["w"], ["wt"], to=1)],
                          [typed("w", W.T.astype(ml_dtypes.float8_e4m3fn))], 19),
    "flatten": ([helper.make_node("Flatten", ["w"], ["wt"], axis=1)], [init("w", W.T.reshape(4, 6, 1))], 17),
    "squeeze_input_axes": ([helper.make_node("Squeeze", ["w", "a"], ["wt"])],
                           [init("w", W.T[None]), typed("a", np.array([0], np.int64))], 17),
    "unsqueeze_attribute_axes_then_transpose": (
        [helper.make_node("Unsqueeze", ["w"], ["w3"], axes=[0]), helper.make_node("Transpose", ["w3"], ["w4"],
                                                                                   perm=[0, 2, 1]),
         helper.make_node("Squeeze", ["w4"], ["wt"], axes=[0])], [init("w", W)], 11),
}


@pytest.mark.parametrize("chain", FOLDED_CHAINS, ids=list(FOLDED_CHAINS))
def test_constants_moved_or_converted_before_a_weight_become_the_weight(chain):
    """A weight behind a Transpose, Reshape or Cast (torch's do_constant_folding=False) was quantized as an
    activation: per tensor, with a QuantizeLinear at every inference. It is the parameter it computes now."""
    nodes, inits, opset = FOLDED_CHAINS[chain]
    graph = graph_of([*nodes, helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm")], [tensor("x", [2, 4])],
                     [tensor("y", [2, 6])], inits, opset=opset)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    before = _ort(graph, x)
    result = GraphSimplify()(graph)
    weight = graph.operations["mm"].inputs[1]
    assert list(graph.operations) == ["mm"] and weight.is_parameter and weight.name == "wt"
    assert len(result.details["constants_folded"]) == len(nodes)
    np.testing.assert_array_equal(weight.value, W.T)
    np.testing.assert_array_equal(_ort(graph, x), before)


def test_what_is_not_exact_or_not_constant_stays():
    """An integer Cast (ONNX Runtime's rounding is not numpy's), a Transpose of an activation and a graph output."""
    graph = graph_of([helper.make_node("Cast", ["w"], ["wi"], to=6, name="to_int"),
                      helper.make_node("Transpose", ["x"], ["xt"], name="of_x"),
                      helper.make_node("Transpose", ["w"], ["out"], name="output")],
                     [tensor("x", [2, 4])], [tensor("wi", [6, 4]), tensor("xt", [4, 2]), tensor("out", [4, 6])],
                     [init("w", W)])
    assert GraphSimplify()(graph).details["constants_folded"] == []
    assert set(graph.operations) == {"to_int", "of_x", "output"}


def test_a_cast_down_to_bfloat16_stays():
    """Only a Cast up from bfloat16 or float 8 is exact; down to bfloat16 is ONNX Runtime's rounding, not folded."""
    graph = graph_of([helper.make_node("Cast", ["w"], ["wb"], to=16, name="down"),
                      helper.make_node("Cast", ["wb"], ["wt"], to=1, name="up"),
                      helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm")],
                     [tensor("x", [2, 4])], [tensor("y", [2, 6])],
                     [init("w", RNG.normal(size=(4, 6)))])
    assert GraphSimplify()(graph).details["constants_folded"] == []
    assert set(graph.operations) == {"down", "up", "mm"}


RESIZES = {  # Resize attributes and operands (roi, scales, sizes) with axes, and the opset
    "cubic_antialias_down": ({"mode": "cubic", "antialias": 1, "axes": [2, 3], "cubic_coeff_a": -0.5},
                             (None, [0.5, 0.5], None), 19),
    "linear_align_corners_up": ({"mode": "linear", "axes": [2, 3], "coordinate_transformation_mode": "align_corners"},
                                (None, [2.0, 2.0], None), 19),
    "nearest_negative_axis": ({"mode": "nearest", "axes": [-1], "nearest_mode": "floor",
                               "coordinate_transformation_mode": "asymmetric"}, (None, [1.5], None), 18),
    "half_pixel_symmetric_one_axis": ({"mode": "linear", "axes": [2],
                                       "coordinate_transformation_mode": "half_pixel_symmetric"},
                                      (None, [0.75], None), 19),
    "sizes": ({"mode": "linear", "axes": [3, 2]}, (None, None, [12, 5]), 19),
    "crop_and_resize_roi": ({"mode": "linear", "axes": [2, 3], "coordinate_transformation_mode": "tf_crop_and_resize",
                             "extrapolation_value": 0.5}, ([0.1, 0.2, 0.9, 1.1], None, [6, 6]), 19),
}


def _resize_graph(attributes, operands, opset, batch=2):
    roi, scales, sizes = operands
    inits, names = [], []
    for name, value, dtype in (("roi", roi, np.float32), ("scales", scales, np.float32), ("sizes", sizes, np.int64)):
        names.append(name if value is not None else "")
        if value is not None:
            inits.append(typed(name, np.array(value, dtype)))
    node = helper.make_node("Resize", ["x", *names], ["y"], name="resize", **attributes)
    return graph_of([node], [tensor("x", [batch, 3, 8, 10])], [tensor("y", None)], inits, opset=opset)


@pytest.mark.parametrize("case", RESIZES, ids=list(RESIZES))
def test_a_resize_with_axes_is_written_over_every_axis_with_the_same_results(case):
    """ONNX Runtime's default session (ORT_ENABLE_ALL) could not run a QDQ Resize with axes ('Gather node ...
    indices element out of data bounds, idx=2 must be within the inclusive range [-2,1]'): GraphSimplify writes
    scale 1, the input's size and roi 0..1 on the other axes, which ONNX Runtime computes bit for bit alike."""
    attributes, operands, opset = RESIZES[case]
    graph = _resize_graph(attributes, operands, opset)
    x = RNG.normal(size=(2, 3, 8, 10)).astype(np.float32)
    before = _ort(graph, x)
    result = GraphSimplify()(graph)
    resize = graph.operations["resize"]
    assert result.details["resize_axes_written_out"] == ["resize"] and "axes" not in resize.attributes
    held = [None if v is None else v.value.size for v in resize.inputs[1:]] + [None] * (4 - len(resize.inputs))
    assert held == [None if v is None else n for v, n in zip(operands, (8, 4, 4), strict=True)]  # rank 4
    np.testing.assert_array_equal(_ort(graph, x), before)


def test_a_resize_with_axes_stays_where_the_full_rank_form_is_unknown():
    """Sizes beside an axis of unknown size (the batch), sizes under a keep_aspect_ratio_policy (which would count
    the other axes in) and computed scales."""
    graph = _resize_graph({"mode": "linear", "axes": [2, 3]}, (None, None, [5, 5]), 19, batch="n")
    assert GraphSimplify()(graph).details["resize_axes_written_out"] == []
    graph = _resize_graph({"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
                          (None, None, [5, 5]), 19)
    assert GraphSimplify()(graph).details["resize_axes_written_out"] == []
    graph = graph_of([helper.make_node("Abs", ["s"], ["scales"]),
                      helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", axes=[2, 3])],
                     [tensor("x", [1, 3, 8, 10]), tensor("s", [2])], [tensor("y", None)], [], opset=19)
    assert GraphSimplify()(graph).details["resize_axes_written_out"] == []
    assert graph.operations["resize"].attributes["axes"] == [2, 3]


PADS = {  # Pad-18 pads, axes and mode
    "one_axis": ([1, 2], [2], "constant"),
    "negative_axes_unordered": ([1, 0, 2, 1], [-1, 1], "reflect"),
    "edge_two_axes": ([0, 1, 2, 0], [2, 3], "edge"),
}


def _pad_graph(pads, axes, mode, rank_known=True):
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad", mode=mode)
    inits = [typed("pads", np.array(pads, np.int64)), typed("axes", np.array(axes, np.int64))]
    return graph_of([node], [tensor("x", [2, 3, 8, 10] if rank_known else None)], [tensor("y", None)], inits,
                    opset=18)


@pytest.mark.parametrize("case", PADS, ids=list(PADS))
def test_a_pad_with_axes_is_written_over_every_axis_with_the_same_results(case):
    """ONNX Runtime's default session could not run a QDQ Pad with axes before a quantized Conv (the same 'Gather
    node ... indices element out of data bounds, idx=2' as a Resize's): GraphSimplify writes its pads at full rank,
    0 on the other axes, and no axes."""
    graph = _pad_graph(*PADS[case])
    x = RNG.normal(size=(2, 3, 8, 10)).astype(np.float32)
    before = _ort(graph, x)
    assert GraphSimplify()(graph).details["pad_axes_written_out"] == ["pad"]
    pad = graph.operations["pad"]
    assert len(pad.inputs) == 3 and pad.inputs[1].value.size == 8
    np.testing.assert_array_equal(_ort(graph, x), before)


def test_a_pad_with_axes_stays_where_the_full_rank_form_is_unknown():
    """An input of unknown rank, and pads that do not fit the axes."""
    assert GraphSimplify()(_pad_graph([1, 2], [2], "constant", rank_known=False)).details["pad_axes_written_out"] == []
    assert GraphSimplify()(_pad_graph([1, 2, 3], [2], "constant")).details["pad_axes_written_out"] == []
