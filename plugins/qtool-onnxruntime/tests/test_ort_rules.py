"""Each diagnostic, made to happen, with what it names; warnings shown true in a real ORT session."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import helper, numpy_helper
from ort_testkit import (
    INT8_ASYM,
    INT8_PER_CHANNEL,
    UINT8,
    agreement,
    calibrated,
    export,
    fork_proto,
    run,
    simulate,
    single_op_proto,
)
from qtool import ExportOptions, Severity
from qtool.ir import from_model_proto
from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantScheme, RoundingPolicy, TensorQuantizationConfig
from qtool.testing import quantize_by_hand, retarget
from qtool_onnxruntime.codes import CODES
from qtool_onnxruntime.session import session_options

PER_CHANNEL = {"Conv": 0, "Gemm": 0, "MatMul": 1, "ConvTranspose": 1}


def _hand(op, activation=UINT8, weight="int8", **kw):
    graph = from_model_proto(single_op_proto(op, **kw))
    if weight == "int8":
        weight = QuantScheme.integer(8, per_channel=True, channel_axis=PER_CHANNEL[op])
    return quantize_by_hand(graph, activation, weight, op_types={op})


def _found(graph, **options):
    return qtool.get_platform("onnxruntime").validate(graph, ExportOptions(**options))


def _all(graph, code, **options):
    matching = [d for d in _found(graph, **options) if d.code == code]
    assert matching and all(d.severity is CODES[code][0] for d in matching), _found(graph, **options)
    return matching


def _one(graph, code, **options):
    (only,) = _all(graph, code, **options)
    return only


def test_no_qdq_type():
    d = _one(_hand("Gemm", weight=QuantScheme.floating(2, 1)), "ort.no-qdq-type")
    assert (d.op, d.tensor, d.scheme) == ("op", "w", "fp4 e2m1")


def test_int32_only_for_stored_parameters():
    found = _all(_hand("Gemm", activation=QuantScheme.integer(32)), "ort.no-qdq-type")
    assert {d.tensor for d in found} == {"x", "y"} and "int32 for stored biases" in found[0].message


@pytest.mark.parametrize("scheme,opset,needs", [
    (QuantScheme.integer(2), 21, "int2 Q/DQ need opset 25"),
    (QuantScheme.floating(4, 3), 17, "float8e4m3fn Q/DQ need opset 19"),
    (QuantScheme.integer(4, block_size=16, channel_axis=1), 19, "per-block Q/DQ (block_size) needs opset 21"),
    (QuantScheme.integer(8, per_channel=True, channel_axis=0), 12, "per-axis Q/DQ needs opset 13"),
])
def test_opset(scheme, opset, needs):
    d = _one(_hand("Gemm", weight=scheme), "ort.opset", opset=opset)
    assert (d.op, d.tensor) == ("op", "w") and needs in d.message


def test_dynamic():
    dynamic = UINT8.with_changes(policy=UINT8.policy | P.DYNAMIC)
    graph = _hand("Gemm", activation=dynamic)
    assert {d.code for d in _found(graph)} == {"ort.dynamic"}


def test_kernel_type_and_conv_weight_axis_name_the_op():
    d = _one(_hand("Gemm", activation=QuantScheme.integer(2, signed=False, symmetric=False)), "ort.kernel-type")
    assert (d.op, d.tensor) == ("op", "x") and "uint2" in d.message and "QGemm" in d.message
    graph = _hand("Conv", bias=False)
    retarget(graph, "w", QuantScheme.integer(8, per_channel=True, channel_axis=1))
    d = _one(graph, "ort.conv-weight-axis")
    assert (d.op, d.tensor) == ("op", "w")


@pytest.mark.parametrize("build,code,tensor", [
    (lambda: _hand("ConvTranspose"), "ort.perf.op-type", None),
    (lambda: _hand("Conv", activation=None), "ort.perf.float-input", "x"),
    (lambda: _hand("Conv", activation=QuantScheme.integer(16)), "ort.perf.type", "x"),
    # a 4-bit weight: the note named the op's input (x)
    (lambda: _hand("MatMul", weight=QuantScheme.integer(4, per_channel=True, channel_axis=1)), "ort.perf.type", "w"),
    (lambda: _hand("Gemm", weight=QuantScheme.integer(4, per_channel=True, channel_axis=0)), "ort.perf.type", "w"),
    (lambda: _hand("Gemm", weight=QuantScheme.integer(8, block_size=16, channel_axis=1)), "ort.perf.granularity",
     "w"),
    (lambda: _fused_relu(QuantScheme.integer(8, signed=False)), "ort.perf.activation", "pre"),
    (lambda: _conv_float_output(), "ort.perf.float-output", "y"),
    (lambda: calibrated(fork_proto(), INT8_ASYM, INT8_PER_CHANNEL), "ort.perf.int8-shared", "t"),
])
def test_performance_notes(build, code, tensor):
    notes = [d for d in _found(build()) if d.severity is Severity.PERFORMANCE]
    assert notes and all(d.code == code for d in notes), notes
    assert notes[0].tensor == tensor and notes[0].op in ("op", "stem")
    assert "runs correctly through DequantizeLinear -> float" in notes[0].message
    assert "slower than an integer kernel" in notes[0].message


def test_a_models_own_int8_pair_before_a_matmul_with_uint8_outputs_runs_as_integer_kernels(tmp_path):
    """The model's own QuantizeLinear/DequantizeLinear (int8) feeds a MatMul qtool quantizes with uint8 outputs:
    ORT fuses an int8 input with a uint8 output, and both MatMuls run as QLinearMatMul. Two false notes were given:
    the codes' type unknown (the model states no type for them; its zero point does), then the mixed types."""
    rng = np.random.default_rng(7)
    node = helper.make_node
    graph = helper.make_graph(
        [node("QuantizeLinear", ["x", "s", "zp"], ["xq"]), node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
         node("MatMul", ["xd", "w1"], ["a"]), node("Relu", ["a"], ["r"]), node("MatMul", ["r", "w2"], ["y"])], "own",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 32])],
        [numpy_helper.from_array(np.array(4 / 127, np.float32), "s"),
         numpy_helper.from_array(np.array(0, np.int8), "zp"),
         numpy_helper.from_array((rng.standard_normal((32, 32)) * 0.2).astype(np.float32), "w1"),
         numpy_helper.from_array((rng.standard_normal((32, 32)) * 0.2).astype(np.float32), "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    calib = [{"x": rng.standard_normal((1, 32)).astype(np.float32)} for _ in range(8)]
    result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", calib, calib_layout="feeds",
                            output=tmp_path / "q.onnx")
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf")], result.diagnostics
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "built.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(tmp_path / "built.onnx").graph.node].count("QLinearMatMul") == 2


def _fused_relu(scheme):
    return calibrated(single_op_proto("Conv", activation="Relu"), scheme, INT8_PER_CHANNEL, fuse=True,
                      op_types={"Conv"})


def _conv_float_output():
    graph = _hand("Conv")
    graph.operations["op"].quant.outputs[0].keep_float()
    return graph


def test_range_narrower_than_the_type_saturates_at_the_type(tmp_path):
    """A 7-bit activation stored as int8: ORT's QuantizeLinear clips at -128/127, qtool at -64/63."""
    seven = QuantScheme.integer(7, symmetric=False)
    graph = calibrated(single_op_proto("Gemm"), seven, INT8_PER_CHANNEL)
    found = _all(graph, "ort.range")
    assert {d.tensor for d in found} == {"x", "y"}
    assert "[-128, 127]" in found[0].message and "[-64, 63]" in found[0].message
    path = export(graph, tmp_path)
    loud = [{"x": np.random.default_rng(0).normal(0, 8, (2, 32)).astype(np.float32)}]
    assert np.abs(run(path, loud[0])[0] - simulate(graph, loud)[0][0]).max() > 0


def test_rounding_other_than_half_even(tmp_path):
    """ORT rounds ties to even; a half-up activation lands one code higher on x.5 steps."""
    half_up = UINT8.with_changes(rounding=RoundingPolicy.HALF_UP)
    graph = _hand("Gemm", activation=half_up)
    for tqc in (graph.operations["op"].quant.inputs[0], graph.operations["op"].quant.outputs[0]):
        tqc.set_params(np.float32(1.0), np.int32(128))
    assert {d.code for d in _found(graph)} == {"ort.rounding"}
    path = export(graph, tmp_path)
    ties = np.tile(np.arange(32, dtype=np.float32) % 4 + 0.5, (2, 1))
    whole = np.round(ties + 0.5)
    assert np.abs(run(path, {"x": ties})[0] - simulate(graph, [{"x": ties}])[0][0]).max() > 0
    assert np.abs(run(path, {"x": whole})[0] - simulate(graph, [{"x": whole}])[0][0]).max() == 0


def _odd_bias(graph, factor: float) -> TensorQuantizationConfig:
    """Give the op's bias an int32 config whose scale is ``factor`` * s_in * s_w."""
    op = graph.operations["op"]
    x, w = op.quant.inputs[0], op.quant.inputs[1]
    tqc = TensorQuantizationConfig(QuantScheme.integer(32, per_channel=True, channel_axis=0), role="bias")
    scale = (x.scale * w.scale * factor).astype(np.float32)
    tqc.set_params(scale, np.zeros(scale.shape, np.int32))
    op.quant.inputs[2] = tqc
    return tqc


def test_bias_ort_would_misread_is_written_as_float(tmp_path):
    graph = calibrated(single_op_proto("Gemm"), UINT8, INT8_PER_CHANNEL)
    tqc = _odd_bias(graph, 1.5)
    d = _one(graph, "ort.bias-float")
    assert (d.op, d.tensor) == ("op", "b") and "not s_in * s_w" in d.message
    path = export(graph, tmp_path)
    model = onnx.load(path)
    assert next(n for n in model.graph.node if n.name == "op").input[2] == "b_dq"
    assert agreement(graph, path)["max_steps"] <= 1
    # Why: the same bias as int32 codes behind a DequantizeLinear makes ORT's QGemm compute wrong numbers.
    codes = np.round(graph.variables["b"].value / tqc.scale).astype(np.int32)
    model.graph.initializer.extend([numpy_helper.from_array(codes, "b_codes"),
                                    numpy_helper.from_array(tqc.scale, "b_codes_scale")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["b_codes", "b_codes_scale"], ["b_int32"],
                                                axis=0))
    next(n for n in model.graph.node if n.name == "op").input[2] = "b_int32"
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)}
    plain = ort.InferenceSession(model.SerializeToString(), session_options(
        level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    step = graph.operations["op"].quant.outputs[0].scale
    assert np.abs(run(model, feeds)[0] - plain).max() > 2 * step
    assert np.abs(run(path, feeds)[0] - plain).max() <= step


def test_int8_and_uint8_weights_and_activations_raise_nothing():
    for activation in (UINT8, INT8_ASYM, QuantScheme.integer(8), QuantScheme.integer(8, signed=False)):
        for weight in (INT8_PER_CHANNEL, QuantScheme.integer(8, signed=False, symmetric=False), QuantScheme.integer(8)):
            graph = calibrated(single_op_proto("Conv"), activation, weight, bias="int32")
            assert _found(graph) == [], (activation.short(), weight.short())
