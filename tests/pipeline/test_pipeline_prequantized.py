"""A model that arrives quantized: its Q/DQ pairs removed and the float model they leave quantized again (or kept,
dispatch.model_quantization = "keep"), its integer ops and weight-only codes kept with no second quantization of
the tensors around them, and what the model held said (a WARNING)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.coverage import MODEL_QUANTIZED
from qtool.testing.models import SMALL_MODEL_INPUT, small_model_proto

SAMPLES = {SMALL_MODEL_INPUT: np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)}
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _warnings(result):
    return [d for d in result.diagnostics if d.code == "model.prequantized"]


def _counts(path) -> dict[str, int]:
    nodes = onnx.load(path).graph.node
    return {t: sum(n.op_type == t for n in nodes) for t in QDQ}


def _float_outputs(path, samples) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {SMALL_MODEL_INPUT: x[None]})[0] for x in samples])


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / ((reference - other) ** 2).sum()))


def _requantized_twice(path) -> int:
    """QuantizeLinear nodes reading a DequantizeLinear's output: a tensor quantized a second time."""
    nodes = onnx.load(path).graph.node
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    return sum(n.op_type == "QuantizeLinear" and n.input[0] in dequantized for n in nodes)


def _static_qdq(tmp_path, **options):
    """The small model as ORT's quantize_static writes it in QDQ (uint8 activations: its Relu dropped where the
    output's range clips at 0 already)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({SMALL_MODEL_INPUT: x[None]} for x in SAMPLES[SMALL_MODEL_INPUT])

        def get_next(self):
            return next(self.feeds, None)

    onnx.save(small_model_proto(), tmp_path / "float.onnx")
    quantize_static(tmp_path / "float.onnx", tmp_path / "qdq.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    **options)
    return tmp_path / "qdq.onnx"


def test_a_qdq_model_of_ort_is_quantized_again_from_the_float_values_its_q_dq_nodes_leave(tmp_path):
    qdq = _static_qdq(tmp_path, per_channel=True)
    assert "Relu" not in {n.op_type for n in onnx.load(qdq).graph.node}  # ORT's uint8 range clips as it did

    result = qtool.quantize(qdq, "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    (warning,) = _warnings(result)
    held = _counts(qdq)
    assert warning.message.startswith(f"the model arrived quantized ({held['DequantizeLinear']} DequantizeLinear, "
                                      f"{held['QuantizeLinear']} QuantizeLinear): qtool removed those Q/DQ nodes")
    assert not [op for op in result.graph.operations.values() if op.op_type in QDQ]  # none of the model's is left
    found = result.summary["coverage"]
    assert found["compute_ops"] == found["compute_ops_quantized"] == 3
    assert _requantized_twice(result.files[0]) == 0
    samples = SAMPLES[SMALL_MODEL_INPUT]
    original = _float_outputs(tmp_path / "float.onnx", samples)
    theirs = _sqnr_db(original, _float_outputs(qdq, samples))
    ours = _sqnr_db(original, _float_outputs(result.files[0], samples))
    assert ours > theirs - 3  # measured against the float model the QDQ one was made from: no Relu lost


def test_a_relu_the_quantizer_dropped_comes_back_and_a_non_negative_tensor_gets_none(tmp_path):
    """ORT drops the Relu whose output its uint8 Q clips at 0: removing that pair puts a Relu back in its place;
    a pair on a tensor a Relu (or pooling of one) wrote already gets none."""
    result = qtool.quantize(_static_qdq(tmp_path), "onnxruntime", SAMPLES)
    relus = [op for op in result.graph.operations.values() if op.op_type == "Relu"]
    assert [op.inputs[0].producer.name for op in relus] == ["conv1"]


def test_keep_keeps_the_scales_of_a_qdq_model(tmp_path):
    """dispatch.model_quantization = "keep" (a QAT model's learned scales): the model's Q/DQ pairs stay as they were,
    no tensor is quantized twice, and the compute ops count as quantized."""
    qdq = _static_qdq(tmp_path, per_channel=True)
    result = qtool.quantize(qdq, "onnxruntime", SAMPLES, config={"dispatch": {"model_quantization": "keep"}},
                            output=tmp_path / "kept.onnx")

    def scales(path):
        model = onnx.load(path)
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return sorted(values[n.input[1]].tobytes() for n in model.graph.node if n.op_type == "QuantizeLinear")

    assert scales(result.files[0]) == scales(qdq) and _counts(result.files[0]) == _counts(qdq)
    assert _requantized_twice(result.files[0]) == 0
    assert result.summary["coverage"]["compute_ops_quantized"] == result.summary["coverage"]["compute_ops"] == 3
    (warning,) = _warnings(result)
    assert warning.message.startswith("the model is quantized already (")


def test_qtools_own_output_fed_back_is_quantized_again_to_the_same_codes(tmp_path):
    onnx.save(small_model_proto(), tmp_path / "float.onnx")
    plain = {"accuracy": {"equalization": False}}  # equalization would scale the weights once more
    first = qtool.quantize(tmp_path / "float.onnx", "onnxruntime", SAMPLES, config=plain, output=tmp_path / "q.onnx")
    assert not _warnings(first)

    again = qtool.quantize(first.files[0], "onnxruntime", SAMPLES, config=plain, output=tmp_path / "qq.onnx")

    assert _counts(again.files[0]) == _counts(first.files[0])  # nothing quantized twice
    assert _requantized_twice(again.files[0]) == 0
    (warning,) = _warnings(again)
    assert warning.severity is qtool.Severity.WARNING
    assert again.summary["coverage"] == first.summary["coverage"]

    def codes(path):
        model = onnx.load(path)
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return [values[n.input[0]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and values.get(n.input[0], np.zeros(0)).dtype == np.int8]

    assert [c.tobytes() for c in codes(again.files[0])] == [c.tobytes() for c in codes(first.files[0])]
    samples = SAMPLES[SMALL_MODEL_INPUT]
    original = _float_outputs(tmp_path / "float.onnx", samples)
    assert _sqnr_db(original, _float_outputs(again.files[0], samples)) > _sqnr_db(
        original, _float_outputs(first.files[0], samples)) - 1


def test_weights_the_model_dequantizes_stay_and_its_float_activations_are_quantized(tmp_path):
    """A weight-only model (int8 codes through DequantizeLinear, float activations, no Q/DQ pair to remove):
    qtool quantizes the activations once and keeps the weights' codes; ORT runs the MatMuls as integer kernels."""
    rng = np.random.default_rng(1)
    codes = [rng.integers(-127, 128, (16, 16)).astype(np.int8) for _ in range(2)]
    nodes, inits = [], []
    for i, c in enumerate(codes):
        inits += [numpy_helper.from_array(c, f"w{i}_codes"), numpy_helper.from_array(np.float32(0.01), f"w{i}_s"),
                  numpy_helper.from_array(np.int8(0), f"w{i}_z")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}_codes", f"w{i}_s", f"w{i}_z"], [f"w{i}"]),
                  helper.make_node("MatMul", ["x" if i == 0 else "h", f"w{i}"], ["h" if i == 0 else "m"],
                                   name=f"mm{i}")]
    nodes.append(helper.make_node("Relu", ["m"], ["y"], name="relu"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "w.onnx")
    samples = {"x": rng.standard_normal((16, 16)).astype(np.float32)}

    result = qtool.quantize(tmp_path / "w.onnx", "onnxruntime", samples, output=tmp_path / "q.onnx")

    assert _warnings(result) and result.summary["coverage"]["compute_ops_quantized"] == 2
    assert all(result.graph.operations[f"mm{i}"].quant.quantized for i in range(2))
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf")]
    assert _requantized_twice(result.files[0]) == 0
    written = onnx.load(result.files[0])
    weights = {t.name: t for t in written.graph.initializer}
    assert all(numpy_helper.to_array(weights[f"w{i}_codes"]).tobytes() == c.tobytes() for i, c in enumerate(codes))
    producers = {o: n.op_type for n in written.graph.node for o in n.output}
    for node in (n for n in written.graph.node if n.op_type == "MatMul"):
        assert [producers[i] for i in node.input] == ["DequantizeLinear", "DequantizeLinear"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "built.onnx")
    ort.InferenceSession(str(result.files[0]), options, providers=["CPUExecutionProvider"])
    built = [n.op_type for n in onnx.load(tmp_path / "built.onnx").graph.node]
    assert built.count("QLinearMatMul") == 2


def test_a_dynamically_quantized_model_counts_its_integer_ops_as_quantized_in_the_model(tmp_path):
    """ORT's quantize_dynamic writes MatMulInteger (and DynamicQuantizeLinear): those are compute ops quantized in
    the model, not ops outside dispatch.quantize_op_types; the float MatMul left beside them is quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="dense"),
             helper.make_node("MatMul", ["h", "h_t"], ["scores"], name="scores_mm"),
             helper.make_node("Transpose", ["h"], ["h_t"], name="transpose", perm=[1, 0])]
    graph = helper.make_graph([nodes[0], nodes[2], nodes[1]], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 4])],
                              [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w1")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8)
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(4)]

    result = qtool.quantize(tmp_path / "dynamic.onnx", "onnxruntime", feeds, calib_layout="feeds",
                            output=tmp_path / "q.onnx")

    integer = [op for op in result.graph.operations.values() if op.op_type == "MatMulInteger"]
    assert integer and all(op.quant.reason == MODEL_QUANTIZED for op in integer)
    assert result.summary["coverage"]["compute_ops"] == result.summary["coverage"]["compute_ops_quantized"] == 2
    assert result.graph.operations["scores_mm"].quant.quantized


def test_a_model_in_integer_ops_is_quantized_in_the_model_not_float(tmp_path):
    """ORT's QOperator format (QLinearConv, QGemm...) has no float compute op left: its compute ops count as
    quantized in the model, and nothing says the model computes in float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    onnx.save(small_model_proto(), tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({SMALL_MODEL_INPUT: x[None]} for x in SAMPLES[SMALL_MODEL_INPUT])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(tmp_path / "float.onnx", tmp_path / "qop.onnx", Reader(), quant_format=QuantFormat.QOperator)

    result = qtool.quantize(tmp_path / "qop.onnx", "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    coverage = result.summary["coverage"]
    assert coverage["compute_ops"] == coverage["compute_ops_quantized"] > 0
    assert [d.code for d in result.diagnostics if d.code.startswith(("coverage.", "model."))] == ["model.prequantized"]
