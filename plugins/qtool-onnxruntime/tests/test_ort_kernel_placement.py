"""Where the onnxruntime defaults put Q/DQ around Conv and MatMul outputs, as ORT's real sessions run them.

The defaults fuse Relu/Clip (ORT folds those into QLinearConv) and HardSigmoid (a squeeze-excitation gate) only,
so a Conv before a HardSwish runs as an integer kernel and one before a HardSigmoid as a float Conv, which
``ort.perf.float-output`` says; fusing a HardSwish too (asked for in the configuration) leaves its Conv float as
well. A MatMul output that no quantized op reads stays float (MatMulIntegerToFloat), except for a weight first
(W @ x), which ORT can only run as a float MatMul then."""

import numpy as np
import onnx
import qtool
import torch
from ort_testkit import optimized_ops, torch_proto
from ort_testkit import run as ort_run
from qtool.quant import QuantizationState
from qtool.testing.models import calibration_file

FLOAT_CONVS = {"Conv", "FusedConv", "NhwcFusedConv"}


class HardBlock(torch.nn.Module):
    """Conv -> HardSwish -> Conv -> Relu -> Conv -> HardSigmoid -> Conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8, 8))

    def forward(self, x):
        x = torch.nn.functional.hardswish(self.convs[0](x))
        x = torch.relu(self.convs[1](x))
        x = torch.nn.functional.hardsigmoid(self.convs[2](x))
        return self.convs[3](x)


def _quantize(tmp_path, config: str | None = None):
    model = tmp_path / "block.onnx"
    onnx.save(torch_proto(HardBlock(), torch.randn(1, 3, 8, 8), opset=17), model)
    calib = calibration_file(qtool.load(model), tmp_path / "calib.npz")
    path = None
    if config is not None:
        path = tmp_path / "config.toml"
        path.write_text(config)
    return qtool.quantize(model, "onnxruntime", calib, config=path, output=tmp_path / "q.onnx")


def _float_output_ops(result) -> list[str]:
    return sorted(d.op for d in result.diagnostics if d.code == "ort.perf.float-output")


def _convs_before(result, *activations: str) -> list[str]:
    return sorted(op.name for op in result.graph.topological_order() if op.op_type == "Conv"
                  and any(c.op_type in activations for c in op.outputs[0].consumers))


def test_by_default_only_the_conv_before_hardsigmoid_runs_float_and_is_noted(tmp_path):
    result = _quantize(tmp_path)

    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("QLinearConv") == 3 and sum(op in FLOAT_CONVS for op in ops) == 1
    assert _float_output_ops(result) == _convs_before(result, "HardSigmoid")
    assert result.config.fused_activations == {"Relu", "Clip", "HardSigmoid"}


def test_fusing_hardswish_when_asked_keeps_its_conv_float_and_says_so(tmp_path):
    result = _quantize(tmp_path, '[fusion]\nfused_activations = ["Relu", "Clip", "HardSwish", "HardSigmoid"]\n')

    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("QLinearConv") == 2 and sum(op in FLOAT_CONVS for op in ops) == 2
    hard = _convs_before(result, "HardSwish", "HardSigmoid")
    assert len(hard) == 2 and _float_output_ops(result) == hard


def test_both_exports_compute_the_same_function(tmp_path):
    """Quantizing the Conv output before HardSwish adds one rounding; the export stays close to float."""
    from ort_testkit import run

    result = _quantize(tmp_path)
    feed = {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected = run(tmp_path / "block.onnx", feed)[0]
    got = run(result.files[0], feed)[0]
    assert 10 * np.log10(np.sum(expected ** 2) / np.sum((expected - got) ** 2)) > 25


def _matmul_model(tmp_path, weight_first: bool, sigmoid: bool = False):
    """y = W @ x (weight first) or x @ W, then ReduceMean: no quantized op reads the MatMul's output; ``sigmoid``:
    x @ W -> Sigmoid -> @ W instead."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    inputs = ["w", "x"] if weight_first else ["x", "w"]
    tail = [helper.make_node("Sigmoid", ["m"], ["s"], name="sig"), helper.make_node("MatMul", ["s", "w"], ["y"],
                                                                                   name="mm2")] if sigmoid else \
        [helper.make_node("ReduceMean", ["m"], ["y"], name="mean", keepdims=0)]
    graph = helper.make_graph([helper.make_node("MatMul", inputs, ["m"], name="mm"), *tail], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4] if sigmoid else [])],
                              [weight])
    model = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    calib = calibration_file(qtool.load(model), tmp_path / "calib.npz")
    return model, calib


def _float_matmul_outputs(tmp_path):
    """The configuration that asks for float MatMul outputs (the default keeps them quantized, for accuracy)."""
    config = tmp_path / "float_outputs.toml"
    config.write_text('[fusion]\nfloat_outputs = ["MatMul"]\n')
    return config


def test_by_default_a_matmul_output_stays_quantized(tmp_path):
    model, calib = _matmul_model(tmp_path, weight_first=False)
    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx")
    assert result.graph.operations["mm"].quant.outputs[0].state is not QuantizationState.FP32


def test_a_matmul_output_no_quantized_op_reads_stays_float_when_asked_and_runs_as_matmul_integer_to_float(tmp_path):
    model, calib = _matmul_model(tmp_path, weight_first=False)
    result = qtool.quantize(model, "onnxruntime", calib, config=_float_matmul_outputs(tmp_path),
                            output=tmp_path / "q.onnx")

    ops = optimized_ops(result.files[0], tmp_path)
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops and ops.count("QuantizeLinear") == 1
    assert result.graph.operations["mm"].quant.outputs[0].notes["reason"] == "float output: no quantized op reads it"
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf")]


def test_a_weight_first_matmul_keeps_its_output_quantized_and_a_float_one_is_noted(tmp_path):
    """ORT has no integer kernel with float output for W @ x: the default keeps the output quantized, and a
    configuration that makes it float gets ort.perf.float-output, which ORT's float MatMul confirms."""
    model, calib = _matmul_model(tmp_path, weight_first=True)
    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx")
    assert result.graph.operations["mm"].quant.outputs[0].state is not QuantizationState.FP32

    config = tmp_path / "float.toml"
    config.write_text('[[override]]\ntensor = "m"\nactivation = "float"\n')
    result = qtool.quantize(model, "onnxruntime", calib, config=config, output=tmp_path / "f.onnx")
    assert "MatMul" in optimized_ops(result.files[0], tmp_path)
    assert _float_output_ops(result) == ["mm"]


def test_an_activation_after_a_matmul_writing_float_is_fused(tmp_path):
    model, calib = _matmul_model(tmp_path, weight_first=False, sigmoid=True)
    result = qtool.quantize(model, "onnxruntime", calib, config=_float_matmul_outputs(tmp_path),
                            output=tmp_path / "q.onnx")

    assert result.graph.operations["mm"].quant.outputs[0].notes["reason"] == "fused with sig"
    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("MatMulIntegerToFloat") == 2 and "MatMul" not in ops
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf")]


class Residual(torch.nn.Module):
    """Two ResNet basic blocks: Conv -> Relu -> Conv, added to the block's input, then Relu."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(8, 8, 3, padding=1) for _ in range(4))
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for first, second in zip(self.convs[::2], self.convs[1::2], strict=True):
            x = torch.relu(x + second(torch.relu(first(x))))
        return self.head(x)


def test_residual_adds_between_quantized_convs_run_as_qlinearadd(tmp_path):
    """dispatch.between_op_types = ["Add"] with add alignment none: each residual Add gets scales of its own, its
    Relu drops before the QuantizeLinear, and ORT runs every op of the blocks in integers, as qtool simulates it."""
    model = tmp_path / "residual.onnx"
    onnx.save(torch_proto(Residual(), torch.randn(1, 3, 8, 8), opset=17), model)
    calib = calibration_file(qtool.load(model), tmp_path / "calib.npz")
    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx", check_agreement=True)

    adds = [op for op in result.graph.topological_order() if op.op_type == "Add"]
    assert len(adds) == 2 and all(op.quant.quantized for op in adds)
    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("QLinearAdd") == 2 and ops.count("QLinearConv") == 6
    assert not {"Add", "Conv", "Relu"} & set(ops)
    assert result.agreement["max_steps"] <= 1
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf")]


def test_a_shape_reads_the_codes_so_no_dequantize_runs_for_it(tmp_path):
    """x -> MatMul -> h -> MatMul -> y, with Shape(h) an output too: the Shape reads h's codes (of the same
    shape), so h's DequantizeLinear feeds the integer MatMul alone and ONNX Runtime fuses it away."""
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in (1, 2)]
    nodes = [onnx.helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             onnx.helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
             onnx.helper.make_node("Shape", ["h"], ["size"], name="size_of_h")]
    graph = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 8]),
         onnx.helper.make_tensor_value_info("size", onnx.TensorProto.INT64, [2])], initializer=weights)
    model = tmp_path / "shape.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), model)
    samples = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx")

    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("QLinearMatMul") == 2 and ops.count("DequantizeLinear") == 1, ops  # y's, the graph output
    np.testing.assert_array_equal(ort_run(result.files[0], samples[0])[1], [4, 8])
