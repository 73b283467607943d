"""What the exporter writes: Q/DQ placement, names, stored weights and biases, types by opset, files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
import torch
from onnx import TensorProto, helper, numpy_helper
from ort_testkit import (
    INT8_ASYM,
    INT8_PER_CHANNEL,
    UINT8,
    agreement,
    calibrated,
    export,
    fork_proto,
    initializer,
    nodes,
    optimized_ops,
    resnetish_proto,
    run,
    samples_for,
    shared_weight_proto,
    single_op_proto,
    torch_proto,
    transformer_proto,
)
from qtool import ExportOptions, QtoolError
from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantScheme, TensorQuantizationConfig, fake_quantize, quantize_to_codes
from qtool.testing import quantize_by_hand
from qtool_onnxruntime.errors import OnnxRuntimeExportError
from qtool_onnxruntime.opset import convert

CONV_PER_CHANNEL = QuantScheme.integer(8, per_channel=True, channel_axis=0)


def _opset(model: onnx.ModelProto, domain: str = "") -> int | None:
    return next((o.version for o in model.opset_import if o.domain == domain), None)


@pytest.mark.parametrize("proto,kernels", [(resnetish_proto, {"QLinearConv": 4, "QGemm": 1}),
                                           (transformer_proto, {"QLinearMatMul": 9})], ids=["cnn", "transformer"])
def test_8bit_models_check_run_and_fuse(proto, kernels, tmp_path):
    graph = calibrated(proto(), UINT8, INT8_PER_CHANNEL, bias="int32")
    path = export(graph, tmp_path, "onnxruntime-int32bias")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == [v.name for v in graph.outputs]
    ops = optimized_ops(path, tmp_path)
    assert {k: ops.count(k) for k in kernels} == kernels
    assert not {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"} & set(ops)
    assert agreement(graph, path)["min_cosine"] > 0.9999


def test_names_are_readable_and_outputs_keep_their_names(tmp_path):
    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL)
    model = onnx.load(export(graph, tmp_path))
    head = next(op for op in graph.operations.values() if op.op_type == "Gemm")
    weight = head.inputs[1].name
    assert initializer(model, f"{weight}_q").dtype == np.int8
    assert initializer(model, f"{weight}_scale").shape == (10,)
    assert initializer(model, f"{weight}_zero_point").shape == (10,)
    assert weight not in {t.name for t in model.graph.initializer}  # only the codes are stored
    gemm = next(n for n in model.graph.node if n.name == head.name)
    assert gemm.input[1] == f"{weight}_dq" and gemm.output[0] == "output_float"
    final = next(n for n in model.graph.node if n.output[0] == "output")
    assert (final.op_type, final.name, final.input[0]) == ("DequantizeLinear", "output_DequantizeLinear", "output_q")
    quantize = next(n for n in model.graph.node if n.output[0] == "output_q")
    assert quantize.name == "output_QuantizeLinear" and quantize.input[0] == "output_float"


def test_int32_bias_is_stored_at_input_times_weight_scale(tmp_path):
    graph = calibrated(single_op_proto("Conv"), UINT8, CONV_PER_CHANNEL, bias="int32")
    model = onnx.load(export(graph, tmp_path, "onnxruntime-int32bias"))
    conv = graph.operations["op"]
    expected = conv.quant.inputs[0].scale * conv.quant.inputs[1].scale
    codes, scale, zero = (initializer(model, f"b_{s}") for s in ("q", "scale", "zero_point"))
    assert codes.dtype == np.int32 and zero.dtype == np.int32 and not zero.any()
    np.testing.assert_allclose(scale, expected, rtol=1e-7)
    np.testing.assert_array_equal(codes, np.round(graph.variables["b"].value / expected).astype(np.int32))
    (dq,) = [n for n in nodes(model, "DequantizeLinear") if n.input[0] == "b_q"]
    assert onnx.helper.get_node_attr_value(dq, "axis") == 0


def test_float_bias_platform_keeps_the_bias_float(tmp_path):
    graph = calibrated(single_op_proto("Conv"), UINT8, CONV_PER_CHANNEL)
    model = onnx.load(export(graph, tmp_path, "onnxruntime"))
    np.testing.assert_array_equal(initializer(model, "b"), graph.variables["b"].value)
    assert next(n for n in model.graph.node if n.name == "op").input[2] == "b"


def test_baked_weights_become_their_exact_codes(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, QuantScheme.integer(8, per_channel=True, channel_axis=0))
    tqc = graph.operations["op"].quant.inputs[1]
    var = graph.variables["w"]
    var.value = fake_quantize(torch.from_numpy(np.array(var.value)), tqc.scheme, tqc.scale, tqc.offset).numpy()
    tqc.bake()
    model = onnx.load(export(graph, tmp_path))
    codes, scale = initializer(model, "w_q"), initializer(model, "w_scale")
    np.testing.assert_array_equal(codes.astype(np.float32) * scale[:, None], var.value)


def test_shared_weight_stored_once_per_distinct_quantization(tmp_path):
    graph = calibrated(shared_weight_proto(), UINT8, CONV_PER_CHANNEL)
    model = onnx.load(export(graph, tmp_path))
    assert [t.name for t in model.graph.initializer if t.name.startswith("w_") and t.name.endswith("_q")] == ["w_q"]
    assert {n.input[1] for n in nodes(model, "Conv")} == {"w_dq"}
    second = graph.operations["second"].quant
    per_tensor = TensorQuantizationConfig(QuantScheme.integer(8), role="weight")
    per_tensor.set_params(np.float32(np.abs(graph.variables["w"].value).max() / 127), np.int32(0))
    second.inputs[1] = per_tensor
    path = export(graph, tmp_path)
    model = onnx.load(path)
    assert {n.name: n.input[1] for n in nodes(model, "Conv")} == {"first": "w_dq", "second": "w_second_dq"}
    assert initializer(model, "w_second_scale").shape == ()
    assert agreement(graph, path)["max_steps"] <= 1


def test_reader_with_its_own_config_gets_a_second_pair(tmp_path):
    graph = calibrated(fork_proto(), UINT8, CONV_PER_CHANNEL)
    right = graph.operations["right"].quant
    own = TensorQuantizationConfig(INT8_ASYM)
    own.set_params(np.float32(0.05), np.int32(-10))
    right.inputs[0] = own
    path = export(graph, tmp_path)
    model = onnx.load(path)
    reads = {n.name: n.input[0] for n in nodes(model, "Conv")}
    assert reads == {"stem": "x_dq", "left": "t_dq", "right": "t_right_dq"}
    second_q = next(n for n in nodes(model, "QuantizeLinear") if n.output[0] == "t_right_q")
    assert second_q.input[0] == "t_dq"  # the reader re-quantizes what the producer's pair wrote
    assert agreement(graph, path)["max_steps"] <= 1


def test_convtranspose_weight_scales_on_axis_1(tmp_path):
    graph = calibrated(single_op_proto("ConvTranspose"), UINT8, QuantScheme.integer(8, per_channel=True,
                                                                                      channel_axis=1),
                       op_types={"ConvTranspose"})
    path = export(graph, tmp_path)
    model = onnx.load(path)
    (dq,) = [n for n in nodes(model, "DequantizeLinear") if n.input[0] == "w_q"]
    assert onnx.helper.get_node_attr_value(dq, "axis") == 1
    assert initializer(model, "w_scale").shape == (16,)
    assert agreement(graph, path)["max_steps"] <= 1


@pytest.mark.parametrize("weight", [QuantScheme.integer(4, per_channel=True, channel_axis=0),
                                    QuantScheme.integer(4, signed=False, symmetric=False, per_channel=True,
                                                        channel_axis=0)], ids=["int4", "uint4"])
def test_4bit_weights_at_opset_21_and_through_com_microsoft_below(weight, tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, weight)
    low = export(graph, tmp_path / "low")
    high = export(graph, tmp_path / "high", opset=21)
    low_model, high_model = onnx.load(low), onnx.load(high)
    elem = TensorProto.INT4 if weight.is_signed else TensorProto.UINT4
    assert (_opset(low_model), _opset(low_model, "com.microsoft")) == (13, 1)
    assert {n.domain for n in nodes(low_model, "DequantizeLinear") if n.input[0] == "w_q"} == {"com.microsoft"}
    assert (_opset(high_model), _opset(high_model, "com.microsoft")) == (21, None)
    for model in (low_model, high_model):
        assert next(t for t in model.graph.initializer if t.name == "w_q").data_type == elem
    feeds = samples_for(graph, 1)[0]
    np.testing.assert_array_equal(run(low, feeds)[0], run(high, feeds)[0])
    assert agreement(graph, high)["max_steps"] <= 1


@pytest.mark.parametrize("fmt", [(4, 3), (5, 2)], ids=["e4m3fn", "e5m2"])
def test_float8_goes_to_opset_19(fmt, tmp_path):
    fp8 = QuantScheme.floating(*fmt)
    graph = calibrated(single_op_proto("Conv"), fp8, fp8.with_changes(policy=P.FLOATING | P.SYMMETRICAL |
                                                                          P.PER_CHANNEL, channel_axis=0))
    path = export(graph, tmp_path)
    model = onnx.load(path)
    elem = TensorProto.FLOAT8E4M3FN if fmt == (4, 3) else TensorProto.FLOAT8E5M2
    assert _opset(model) == 19
    assert next(t for t in model.graph.initializer if t.name == "w_q").data_type == elem
    assert next(t for t in model.graph.initializer if t.name == "x_zero_point").data_type == elem
    report = agreement(graph, path)
    assert report["outputs"]["y"]["max_relative"] < 1e-6 and report["min_cosine"] > 0.999999


@pytest.mark.parametrize("opset,domain", [(21, ""), (None, "com.microsoft")])
def test_int16_activations(opset, domain, tmp_path):
    int16 = QuantScheme.integer(16, symmetric=False)
    graph = calibrated(single_op_proto("MatMul"), int16, QuantScheme.integer(8, per_channel=True, channel_axis=1))
    path = export(graph, tmp_path, opset=opset)
    model = onnx.load(path)
    assert {n.domain for n in nodes(model, "QuantizeLinear")} == {domain}
    assert _opset(model) == (opset or 13)
    assert initializer(model, "x_zero_point").dtype == np.int16
    assert agreement(graph, path)["max_steps"] <= 1


@pytest.mark.parametrize("op,bits,axis", [("MatMul", 4, 0), ("Gemm", 8, 1)])
def test_blocked_weights_at_opset_21(op, bits, axis, tmp_path):
    weight = QuantScheme.integer(bits, block_size=16, channel_axis=axis)
    graph = calibrated(single_op_proto(op), UINT8, weight)
    path = export(graph, tmp_path)
    model = onnx.load(path)
    (dq,) = [n for n in nodes(model, "DequantizeLinear") if n.input[0] == "w_q"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
    assert _opset(model) == 21 and attrs == {"axis": axis, "block_size": 16}
    w = graph.variables["w"].value
    blocks = list(w.shape)
    blocks[axis] //= 16
    assert initializer(model, "w_scale").shape == tuple(blocks) == initializer(model, "w_zero_point").shape
    assert agreement(graph, path)["max_steps"] <= 1


def test_2bit_weights_go_to_opset_25(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), QuantScheme.integer(4, symmetric=False),
                       QuantScheme.integer(2, per_channel=True, channel_axis=0))
    path = export(graph, tmp_path)
    model = onnx.load(path)
    assert _opset(model) == 25
    assert next(t for t in model.graph.initializer if t.name == "w_q").data_type == TensorProto.INT2
    assert agreement(graph, path)["max_steps"] <= 1


def test_model_opset_raised_when_configs_need_it(tmp_path):
    proto = single_op_proto("Conv", opset=11)
    graph = calibrated(proto, UINT8, CONV_PER_CHANNEL)
    path = export(graph, tmp_path)
    model = onnx.load(path)
    assert _opset(model) == 13 and model.ir_version >= 7
    assert agreement(graph, path)["max_steps"] <= 1


def test_large_weights_keep_their_values_through_the_opset_conversion(tmp_path):
    """The float model is converted without its large weights' bytes: a quantized one is written as its codes,
    a float one (the constant of an Add no quantized op reads) gets its values back, exactly."""
    rng = np.random.default_rng(0)
    weight, constant = rng.normal(size=(2048, 8)).astype(np.float32), rng.normal(size=(1, 2048)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w"], ["g"], name="op", transB=1),
         onnx.helper.make_node("Add", ["g", "c"], ["y"], name="add")], "g",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(constant, "c")])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)], ir_version=6)
    graph = calibrated(proto, UINT8, QuantScheme.integer(8, per_channel=True, channel_axis=0), op_types=("Gemm",))
    path = export(graph, tmp_path)
    model = onnx.load(path)
    assert _opset(model) == 13 and min(weight.nbytes, constant.nbytes) > 4096  # both left out, then
    np.testing.assert_array_equal(initializer(model, "c"), constant)
    tqc = graph.operations["op"].quant.inputs[1]
    codes = quantize_to_codes(weight, tqc.scheme, tqc.scale, tqc.offset)
    np.testing.assert_array_equal(initializer(model, "w_q"), codes)
    assert "w" not in {t.name for t in model.graph.initializer}
    assert agreement(graph, path)["min_cosine"] > 0.99999  # the float output: ORT and the simulation agree


def _between_convs(folder, opset: int, middle: list, params: dict | None = None, config: dict | None = None):
    """Conv -> ``middle`` (reading "c", writing "m") -> Conv, written at ``opset`` and quantized for onnxruntime
    on 4 feeds with ``config`` (the export converts it to opset 13 for its per-channel weights)."""
    rng = np.random.default_rng(0)
    helper = onnx.helper
    for number, node in enumerate(middle):
        node.name = node.name or f"middle{number}"
    weights = {"w1": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
               "w2": rng.normal(size=(4, 8, 1, 1)).astype(np.float32), **(params or {})}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]), *middle,
         helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(value, name) for name, value in weights.items()])
    opsets = [helper.make_opsetid("", opset)]
    source = folder / f"opset{opset}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)),
              source)
    feeds = [{"x": rng.normal(size=(1, 3, 6, 6)).astype(np.float32)} for _ in range(4)]
    return qtool.quantize(source, "onnxruntime", feeds, calib_layout="feeds", output=folder / "q.onnx", config=config)


def _producers(model: onnx.ModelProto) -> dict[str, str]:
    return {out: node.op_type for node in model.graph.node for out in node.output}


SCALES = {"scales": np.array([1, 1, 2, 2], np.float32)}


def test_an_opset_9_upsample_converted_to_resize_keeps_its_names(tmp_path):
    """onnx.version_converter writes the Resize it puts in an Upsample's place unnamed, with an output of a new
    name: the Q/DQ pair of that output read a tensor no node wrote (ORT refused the model). The converted node
    takes the Upsample's name and output back, and the quantized Conv reads that output through its pair."""
    upsample = onnx.helper.make_node("Upsample", ["c", "scales"], ["m"], name="upsample", mode="nearest")
    result = _between_convs(tmp_path, 9, [upsample], SCALES)

    model = onnx.load(result.files[0])
    (resize,) = [node for node in model.graph.node if node.op_type == "Resize"]
    assert _opset(model) == 13 and (resize.name, list(resize.output)) == ("upsample", ["m"])
    conv2 = next(node for node in model.graph.node if node.name == "conv2")
    assert [_producers(model)[name] for name in conv2.input[:2]] == ["DequantizeLinear", "DequantizeLinear"]
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 30


def test_an_opset_10_resize_that_gains_a_roi_input_keeps_its_scales(tmp_path):
    """At opset 11 the converter puts a roi input (a new Constant) where the scales were: the scales initializer
    still exists, so nothing is renamed to it (a roi named "scales" made ORT refuse the model)."""
    resize = onnx.helper.make_node("Resize", ["c", "scales"], ["m"], name="resize", mode="nearest")
    result = _between_convs(tmp_path, 10, [resize], SCALES)

    (written,) = [node for node in onnx.load(result.files[0]).graph.node if node.op_type == "Resize"]
    assert written.name == "resize" and written.input[2] == "scales" and written.input[1] != "scales"
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25


def test_nodes_the_opset_conversion_puts_before_a_reader_read_its_pair(tmp_path):
    """onnx.version_converter writes an opset-11 Softmax(axis=1) as Reshape(Softmax(Flatten(x)), Shape(x)) at
    opset 13; the Softmax's pair output went to the Softmax in the Flatten's place (a softmax over the channels
    alone: SQNR -16.5 dB against float). The Flatten and the Shape read it now, and the model is the float one's."""
    result = _between_convs(tmp_path, 11, [onnx.helper.make_node("Softmax", ["c"], ["m"], name="softmax", axis=1)])

    model = onnx.load(result.files[0])
    flatten = next(node for node in model.graph.node if node.op_type == "Flatten")
    assert _opset(model) == 13 and _producers(model)[flatten.input[0]] == "DequantizeLinear"
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25


def test_a_converted_softmax_and_an_upsample_leave_no_two_nodes_of_one_name(tmp_path):
    """torch's opset-9 export of an upsampling CNN with a Softmax: the Upsample's Resize takes its old name back, and
    then the Reshape the converter writes after the Softmax took the Softmax's name too ('two nodes with same node
    name (/Softmax)': ORT refused the model). Each name stays on one node."""
    middle = [onnx.helper.make_node("Upsample", ["c", "scales"], ["u"], name="/Upsample", mode="nearest"),
              onnx.helper.make_node("Softmax", ["u"], ["m"], name="/Softmax", axis=1)]
    result = _between_convs(tmp_path, 9, middle, SCALES)

    names = [node.name for node in onnx.load(result.files[0]).graph.node if node.name]
    assert len(names) == len(set(names)) and {"/Upsample", "/Softmax"} <= set(names)
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25


def test_the_bounds_the_conversion_gives_a_clip_count_as_constants(tmp_path):
    """torch's opset-9 export of a ReLU6, float8 activations: at opset 19 the Clip's bounds are inputs the converter
    wrote as Constant nodes, so the export did not see constant bounds and left the Clip before its pair; ORT,
    folding them, refused the model ('Unexpected data type for QuantizeLinear input y_zero_point of 17'). They are
    initializers, and the Clip goes after its pair as any float8 one does."""
    clip = onnx.helper.make_node("Clip", ["c"], ["m"], name="relu6", min=0.0, max=6.0)
    result = _between_convs(tmp_path, 9, [clip], config={"preset": "fp8-e4m3"})

    model = onnx.load(result.files[0])
    assert _opset(model) == 19 and not nodes(model, "Constant")
    assert _producers(model)[nodes(model, "Clip")[0].input[0]] == "DequantizeLinear"
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 15


_N = onnx.helper.make_node
_BN = {"g": np.ones(8, np.float32), "b": np.zeros(8, np.float32), "mu": np.zeros(8, np.float32),
       "var": np.ones(8, np.float32)}
OLD_OPSETS = {  # ops whose form the conversion to opset 13 changes, between two quantized Convs
    "clip-10": (10, [_N("Clip", ["c"], ["m"], min=0.0, max=6.0)], {}),
    "pad-10": (10, [_N("Pad", ["c"], ["m"], pads=[0, 0, 1, 1, 0, 0, 1, 1])], {}),
    "softmax-11": (11, [_N("Softmax", ["c"], ["m"], axis=1)], {}),
    "logsoftmax-11": (11, [_N("LogSoftmax", ["c"], ["m"], axis=2)], {}),
    "split-12": (12, [_N("Split", ["c"], ["s1", "s2"], axis=1, split=[4, 4]),
                      _N("Concat", ["s2", "s1"], ["m"], axis=1)], {}),
    "squeeze-12": (12, [_N("Unsqueeze", ["c"], ["u"], axes=[0]), _N("Squeeze", ["u"], ["m"], axes=[0])], {}),
    "reducesum-12": (12, [_N("ReduceSum", ["c"], ["s"], axes=[1]), _N("Add", ["c", "s"], ["m"])], {}),
    "slice-9": (9, [_N("Slice", ["c"], ["m"], starts=[0, 0], ends=[4, 4], axes=[2, 3])], {}),
    "dropout-10": (10, [_N("Dropout", ["c"], ["m"], ratio=0.1)], {}),
    "batchnorm-9": (9, [_N("BatchNormalization", ["c", "g", "b", "mu", "var"], ["m"])], _BN),
    "averagepool-9": (9, [_N("AveragePool", ["c"], ["m"], kernel_shape=[2, 2], strides=[2, 2])], {}),
}


@pytest.mark.parametrize("case", sorted(OLD_OPSETS))
def test_models_of_older_opsets_keep_their_function_through_the_conversion(case, tmp_path):
    opset, middle, params = OLD_OPSETS[case]
    result = _between_convs(tmp_path, opset, middle, params)

    assert _opset(onnx.load(result.files[0])) == 13
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25


def _hardmax_proto(axis: int, opset: int = 11) -> onnx.ModelProto:
    """x [2, 3, 4] -> Hardmax(axis) -> y, at ``opset``."""
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hardmax", axis=axis)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=6)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_an_opset_11_hardmax_keeps_its_flattening_at_opset_13(axis):
    """Before opset 13 a Hardmax puts one 1 in its input flattened to 2-D at ``axis``; onnx.version_converter kept
    the node as it was, a 1 along ``axis`` alone at 13 (an opset-11 model's Hardmax(axis=1) of [2, 5, 6] read
    6.5 dB against float once quantized). The conversion writes the flattening out, as it does for a Softmax."""
    x = {"x": np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)}
    before = run(_hardmax_proto(axis), x)[0]
    converted = convert(_hardmax_proto(axis), 13)

    assert _opset(converted) == 13
    np.testing.assert_array_equal(run(converted, x)[0], before)
    assert len(converted.graph.node) == (1 if axis in (2, -1) else 4)  # along the last axis, nothing to write


class _Reshaped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.linear(x.reshape(1, -1))


def test_a_model_at_opset_28_is_written_at_27(tmp_path):
    graph = calibrated(single_op_proto("Gemm", opset=28), UINT8, INT8_PER_CHANNEL)
    path = export(graph, tmp_path)
    assert _opset(onnx.load(path)) == 27
    assert agreement(graph, path)["max_steps"] <= 1


def test_lowering_an_op_newer_than_the_opset_names_the_opset_it_came_in(tmp_path):
    """An opset-23 RMSNormalization asked for at opset 13: the converter's 'No Previous Version of
    RMSNormalization exists' says which opset the op needs."""
    rms = helper.make_graph([helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="rms")], "g",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                            [numpy_helper.from_array(np.ones(8, np.float32), "s")])
    with pytest.raises(OnnxRuntimeExportError, match="from opset 23 to opset 13 with onnx.version_converter: "
                                                     "RMSNormalization exists from opset 23 on, not at opset 13; "):
        convert(helper.make_model(rms, opset_imports=[helper.make_opsetid("", 23)]), 13)


def test_lowering_the_opset_fails_with_a_clear_error(tmp_path):
    graph = calibrated(torch_proto(_Reshaped(), torch.randn(1, 3, 4), opset=17), UINT8, INT8_PER_CHANNEL)
    with pytest.raises(OnnxRuntimeExportError, match="from opset 17 to opset 13 with onnx.version_converter: it has "
                                                     "no way to write Reshape-14 at opset 13; set the export opset"):
        export(graph, tmp_path, opset=13)  # not its C++ assertion text ('BaseConverter.h:66: adapter_lookup: ...')


def test_opset_28_is_refused_before_writing(tmp_path):
    graph = calibrated(single_op_proto("Conv"), UINT8, CONV_PER_CHANNEL)
    (error,) = qtool.get_platform("onnxruntime").validate(graph, ExportOptions(opset=28))
    assert (error.code, error.severity) == ("ort.opset", qtool.Severity.ERROR)
    with pytest.raises(QtoolError, match="opset 28"):
        export(graph, tmp_path, opset=28)
    assert not list(tmp_path.iterdir())


def test_a_refused_export_leaves_the_previous_file(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, INT8_PER_CHANNEL)
    path = export(graph, tmp_path)
    before = path.read_bytes()
    quantize_by_hand(graph, UINT8, QuantScheme.floating(2, 1), op_types={"Gemm"})
    with pytest.raises(OnnxRuntimeExportError, match="tensor 'w'.*fp4 e2m1"):
        export(graph, tmp_path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_output_without_suffix_gets_onnx(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, INT8_PER_CHANNEL)
    paths = qtool.get_platform("onnxruntime").export(graph, tmp_path / "quantized", ExportOptions())
    assert paths == [tmp_path / "quantized.onnx"]


def test_external_data(tmp_path):
    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL)
    paths = qtool.get_platform("onnxruntime").export(graph, tmp_path / "big.onnx",
                                                     ExportOptions(extra={"external_data": True}))
    assert paths == [tmp_path / "big.onnx", tmp_path / "big.onnx.data"]
    model = onnx.load(paths[0], load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(str(paths[0]))
    assert agreement(graph, paths[0])["max_steps"] <= 1


def test_a_model_beyond_one_protobuf_keeps_its_external_data(tmp_path, monkeypatch):
    """Without being asked, a model whose initializers exceed the protobuf limit (lowered here, so that a small
    model crosses it) is written with its data file, which ONNX Runtime reads; it was deleted once the model was
    saved (the size was measured on the saved model, whose bytes had moved out)."""
    import qtool.ir.onnx_export

    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL)
    (tmp_path / "big.onnx.data").write_bytes(b"an earlier run's")
    monkeypatch.setattr(qtool.ir.onnx_export, "PROTO_LIMIT", 4096)
    paths = qtool.get_platform("onnxruntime").export(graph, tmp_path / "big.onnx", ExportOptions())
    assert paths == [tmp_path / "big.onnx", tmp_path / "big.onnx.data"]
    model = onnx.load(paths[0], load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    assert agreement(graph, paths[0])["max_steps"] <= 1


def test_an_earlier_data_file_goes_where_every_tensor_stays_inline(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, INT8_PER_CHANNEL)  # every tensor under 1 KiB
    (tmp_path / "model.onnx.data").write_bytes(b"an earlier run's")
    paths = qtool.get_platform("onnxruntime").export(graph, tmp_path / "model.onnx",
                                                     ExportOptions(extra={"external_data": True}))
    assert paths == [tmp_path / "model.onnx"] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_the_load_check_reads_the_model_without_the_weights_bytes_and_refuses_what_ort_refuses():
    """ONNX Runtime loads the model with the large initializers (weight codes) and the shape-only ones as typed
    graph inputs, the small ones as they are; it refuses a node it has no kernel for, and a type ONNX's inference
    rejects, before anything is written. Where errors were allowed, the ONNX checker reads it instead."""
    from onnx import helper, numpy_helper
    from qtool_onnxruntime.errors import OnnxRuntimeExportError
    from qtool_onnxruntime.export import _checkable, check_loads

    codes = numpy_helper.from_array(np.ones((64, 64), np.int8), "w_codes")  # 4 KiB
    scale = numpy_helper.from_array(np.float32(0.1), "w_scale")
    shape_only = onnx.TensorProto(name="bias", data_type=TensorProto.FLOAT, dims=[64])  # as shape_only_tensor
    nodes = [helper.make_node("DequantizeLinear", ["w_codes", "w_scale"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [codes, scale, shape_only])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    values = {"bias": np.zeros(64, np.float32)}
    light = _checkable(model, values)
    assert [t.name for t in light.graph.initializer] == ["w_scale"]
    typed = {i.name: (i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
             for i in light.graph.input}
    assert typed == {"x": (TensorProto.FLOAT, [1, 64]), "w_codes": (TensorProto.INT8, [64, 64]),
                     "bias": (TensorProto.FLOAT, [64])}
    check_loads(model, values, allow_unsupported=False)
    check_loads(model, values, allow_unsupported=True)
    assert len(model.graph.initializer) == 3 and model.graph.initializer[0].raw_data  # the model is untouched
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.float16(0.1), "w_scale"))  # a float16 scale at
    with pytest.raises(OnnxRuntimeExportError, match="ONNX Runtime refuses the QDQ model.*w_scale"):  # opset 17
        check_loads(model, values, allow_unsupported=False)
    model.graph.initializer[1].CopyFrom(scale)
    model.graph.node[1].op_type = "MatMulWrong"
    with pytest.raises(OnnxRuntimeExportError, match="ONNX Runtime refuses the QDQ model.*MatMulWrong"):
        check_loads(model, values, allow_unsupported=False)
    with pytest.raises(OnnxRuntimeExportError, match="fails the ONNX checker"):
        check_loads(model, values, allow_unsupported=True)


def test_a_refusal_after_the_opset_conversion_names_the_conversion(tmp_path):
    """onnx.version_converter takes ReduceMean from opset 18 to 17 but leaves noop_with_empty_axes, which opset 17
    lacks: the refusal names the conversion the user asked for, not the quantization."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1, noop_with_empty_axes=0, name="mean"),
             helper.make_node("Sub", ["x", "m"], ["c"], name="center"),
             helper.make_node("MatMul", ["c", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              initializer=[numpy_helper.from_array(np.array([1], np.int64), "axes"),
                                           numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32),
                                                                   "w")])
    model = tmp_path / "m18.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    samples = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(4)]
    with pytest.raises(qtool.QtoolError, match=r"as onnx.version_converter wrote it at opset 17 \(--opset\) from "
                                               r"the model's 18 .*noop_with_empty_axes.*export at opset 18"):
        qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx", opset=17)
    assert not (tmp_path / "q.onnx").exists()


def test_an_old_upsample_keeps_its_coordinates_when_the_opset_rises(tmp_path):
    """Conv -> Upsample(linear, x2, opset 7) -> Conv: per-channel Q/DQ needs opset 13, and onnx.version_converter's
    Resize took that opset's half_pixel default where the Upsample mapped x to x / 2 (6.6 dB against the float
    model, from the rewrite alone)."""
    rng = np.random.default_rng(0)
    layers = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Upsample", ["c"], ["u"], mode="linear", scales=[1.0, 1.0, 2.0, 2.0]),
              helper.make_node("Conv", ["u", "w2"], ["y"])]
    graph = helper.make_graph(layers, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2, 14, 14])],
                              initializer=[numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(
                                  np.float32) * 0.3, "w"), numpy_helper.from_array(rng.standard_normal(
                                      (2, 4, 3, 3)).astype(np.float32) * 0.3, "w2")])
    model = tmp_path / "up7.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)]), model)
    samples = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx")
    [resize] = nodes(onnx.load(result.files[0]), "Resize")
    attributes = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
    assert attributes["coordinate_transformation_mode"] == b"asymmetric"
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25  # 6.6 before


def test_weights_listed_as_graph_inputs_leave_the_inputs_with_their_float_values(tmp_path):
    """An IR-3 model lists every initializer as a graph input too: a quantized weight's input went with nothing to
    provide it (ONNX Runtime: 'Required inputs (['w']) are missing')."""
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
               "b": np.zeros(4, np.float32), "fw": rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32) * 0.1}
    layers = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1)]
    listed = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape))
              for name, value in weights.items()]
    graph = helper.make_graph(layers, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                            *listed],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = tmp_path / "ir3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3), model)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx")
    written = onnx.load(result.files[0])
    initializers = {t.name for t in written.graph.initializer}
    assert all(i.name == "x" or i.name in initializers for i in written.graph.input)
    assert result.summary["coverage"]["compute_ops_quantized"] == 2
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 30


def test_a_model_below_opset_11_is_written_at_11_where_ort_rewrites_a_float_bias(tmp_path):
    """A Gemm of two activations with a broadcast bias (onnx's own test model pytorch-operator/test_operator_mm,
    opset 6): ORT fuses it into QGemm and quantizes the bias through a Round, an opset-11 op, which at opset 10
    made it refuse the model it had rewritten (the per-tensor pairs alone need no more than 10)."""
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["a", "b", "c"], ["y"], name="gemm", broadcast=1)], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [onnx.numpy_helper.from_array(np.full(1, 0.5, np.float32), "c")])
    source = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3), source)
    rng = np.random.default_rng(0)
    feeds = [{"a": rng.normal(size=(2, 3)).astype(np.float32), "b": rng.normal(size=(3, 4)).astype(np.float32)}
             for _ in range(4)]

    result = qtool.quantize(source, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")

    assert _opset(onnx.load(result.files[0])) == 11
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25  # measured in a default session


@pytest.mark.parametrize("config", ['preset = "fp8-e4m3"', "[activation]\nbits = 4", "[activation]\nbits = 16"])
def test_a_shape_or_size_of_a_quantized_tensor_loads_whatever_its_code_type(tmp_path, config):
    """ORT's Shape and Size have no kernel for 4-bit codes, Size none for float8, Shape none for float8 below opset
    21: there they read the dequantized values (a BERT encoder's attention reshapes read Shape(q @ k) and failed
    to load as fp8: "Could not find an implementation for Shape(19)"), and keep reading 8- or 16-bit codes."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in (1, 2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
         helper.make_node("Shape", ["h"], ["shape"], name="shape_of_h"),
         helper.make_node("Size", ["h"], ["size"], name="size_of_h")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("size", TensorProto.INT64, [])], initializer=weights)
    model = tmp_path / "shape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    (tmp_path / "q.toml").write_text(config)
    samples = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(model, "onnxruntime", samples, config=tmp_path / "q.toml", output=tmp_path / "q.onnx")

    outputs = run(result.files[0], samples[0])
    np.testing.assert_array_equal(outputs[1], [4, 8])
    assert int(outputs[2]) == 32
    written = onnx.load(result.files[0])
    readers = {n.name: n.input[0] for n in nodes(written, "Shape") + nodes(written, "Size")}
    assert readers["shape_of_h"] == readers["size_of_h"] == ("h_q" if "16" in config else "h_dq"), readers
