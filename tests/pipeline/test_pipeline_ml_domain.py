"""Models as scikit-learn's exporter (skl2onnx) writes them: ai.onnx.ml ops (Scaler) beside the MatMuls of an
MLPClassifier, and a ZipMap whose output is a sequence of maps (one {class: probability} per sample). The MatMuls are
quantized, the ai.onnx.ml ops run float through ONNX Runtime, and the maps' probabilities are measured as any float
output: calibration used to crash on the maps' size, the float-vs-quantized numbers read them as labels (0 % equal),
and the agreement check, the sensitivity fallback and analyse failed on them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.executor import TorchExecutor

CLASSES = [3, 5, 7]


def _classifier(path) -> None:
    """x [N, 6] -> Scaler -> MatMul -> Relu -> MatMul -> Softmax -> (ArgMax label, ZipMap probabilities)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (6, 16)), ("w2", (16, 3)))]
    nodes = [
        helper.make_node("Scaler", ["x"], ["scaled"], domain="ai.onnx.ml", offset=[0.5] * 6, scale=[2.0] * 6),
        helper.make_node("MatMul", ["scaled", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                         classlabels_int64s=CLASSES),
    ]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(nodes, "skl_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                               helper.make_value_info("output_probability", maps)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


@pytest.fixture
def classifier(tmp_path):
    _classifier(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).random((72, 6), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    return tmp_path / "mlp.onnx", tmp_path / "calib.npz", x


def _probabilities(maps: list[dict]) -> np.ndarray:
    return np.array([[m[c] for c in CLASSES] for m in maps], np.float64)


def _sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    return 10 * np.log10((reference ** 2).sum() / ((reference - test) ** 2).sum())


def test_the_maps_are_measured_as_probabilities_and_kept_in_the_written_model(classifier, tmp_path):
    model, calib, x = classifier
    result = qtool.quantize(model, "onnxruntime", str(calib), output=tmp_path / "q.onnx", max_samples=64,
                            check_agreement=True)

    written = onnx.load(result.files[0])
    producers = {out: node.op_type for node in written.graph.node for out in node.output}
    assert [[producers[i] for i in node.input] for node in written.graph.node if node.op_type == "MatMul"] == \
        [["DequantizeLinear", "DequantizeLinear"]] * 2
    assert [o.type for o in written.graph.output] == [o.type for o in onnx.load(model).graph.output]
    held_out = x[64:]
    floats = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": held_out})
    quantized = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"]).run(
        None, {"x": held_out})
    assert [sorted(m) for m in quantized[1]] == [CLASSES] * len(held_out)  # maps still, one per sample
    probabilities = [_probabilities(maps) for maps in (floats[1], quantized[1])]
    measured = result.summary["float_vs_quantized"]
    assert measured["held_out"] and measured["samples"] == 8
    assert measured["outputs"]["output_probability"]["sqnr_db"] == pytest.approx(_sqnr_db(*probabilities), abs=0.01)
    assert measured["outputs"]["label"] == {"equal_share": float(np.mean(floats[0] == quantized[0]))}
    assert result.agreement["outputs"]["output_probability"]["cosine"] > 0.99999


def test_the_maps_calibration_kept_are_measured_as_probabilities(classifier, tmp_path):
    """One sample a run (the feeds layout): calibration's run keeps the float outputs, the maps among them."""
    model, _, x = classifier
    feeds = [{"x": x[i:i + 1]} for i in range(16)]
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")

    floats = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})
    quantized = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})
    probabilities = [_probabilities(maps) for maps in (floats[1], quantized[1])]
    measured = result.summary["float_vs_quantized"]["outputs"]["output_probability"]
    assert measured["sqnr_db"] == pytest.approx(_sqnr_db(*probabilities), abs=0.01)


def test_the_executor_returns_the_maps_onnx_runtime_computes(classifier):
    model, _, x = classifier
    floats = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x[:4]})

    label, maps = TorchExecutor(qtool.load(model)).forward({"x": x[:4]})

    assert np.array_equal(label, floats[0])
    assert [sorted(m) for m in maps] == [CLASSES] * 4
    assert np.allclose(_probabilities(maps), _probabilities(floats[1]), atol=1e-6)


def test_the_sensitivity_fallback_and_analyse_measure_the_maps(classifier, tmp_path):
    model, calib, _ = classifier
    result = qtool.quantize(model, "onnxruntime", str(calib), output=tmp_path / "q.onnx",
                            config={"accuracy": {"fallback": {"min_snr_db": 80, "max_share": 1.0}}})
    fallback = next(run for run in result.summary["passes"] if run["name"] == "SensitivityFallback")["details"]
    assert fallback["before"] < 80 and fallback["changed"]  # measured on the maps, and ops returned to float

    report = qtool.analyse(model, "onnxruntime", str(calib), samples=16)
    assert {"fc1", "fc2"} <= {entry["op"] for entry in report.layerwise}
    assert report.layerwise_unmeasured is None


def _string_model(path) -> None:
    """s [N, 1] string -> ai.onnx.ml LabelEncoder -> float -> MatMul: skl2onnx's encoders of text columns."""
    nodes = [helper.make_node("LabelEncoder", ["s"], ["codes"], domain="ai.onnx.ml", keys_strings=["a", "b"],
                              values_floats=[0.0, 1.0], default_float=-1.0),
             helper.make_node("MatMul", ["codes", "w"], ["y"])]
    graph = helper.make_graph(nodes, "strings", [helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(np.ones((1, 2), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("ai.onnx.ml", 3)]), path)


@pytest.mark.parametrize("form", ["unicode npz", "object npz", "python feeds"])
def test_a_string_input_is_refused_in_one_line_naming_it(form, tmp_path, capsys):
    """numpy keeps text as '<U1' (refused as 'expected object') or object arrays (np.load's pickle error, a
    traceback)."""
    from qtool.cli.main import main

    _string_model(tmp_path / "strings.onnx")
    text = np.array([["a"], ["b"], ["a"]])
    if form == "python feeds":
        with pytest.raises(qtool.QtoolError, match="input 's' is a string tensor"):
            qtool.quantize(tmp_path / "strings.onnx", "onnxruntime", [{"s": text}], output=tmp_path / "q.onnx")
    else:
        np.savez(tmp_path / "calib.npz", s=text if form == "unicode npz" else text.astype(object))
        code = main(["quantize", str(tmp_path / "strings.onnx"), "--platform", "onnxruntime",
                     "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "q.onnx")])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(error) == 1
        assert error[0].startswith("qtool: error: ") and "calib.npz: input 's' is a string tensor" in error[0]
    assert not (tmp_path / "q.onnx").exists()
