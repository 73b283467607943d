"""Detectors whose outputs have a varying number of rows, as torchvision's exported with batch 1: the sensitivity
fallback compares them with the float outputs. Stands for fasterrcnn_mobilenet_v3_large_320_fpn (random weights:
box_score_thresh 0.05 kept no box on any image) and for any detector whose NonMaxSuppression keeps another number of
boxes once quantized."""

import math
import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save
from qtool.analysis import OutputsError
from qtool.cli.main import main


def _boxes_above(path, threshold: float, layers: int = 10) -> str:
    """x (n, 8) -> ``layers`` MatMul + Relu -> Sigmoid scores (n, 8); y = the scores above ``threshold`` (a
    NonMaxSuppression's varying rows), and their indices. Ten layers: the fallback may change one of them."""
    rng = np.random.default_rng(0)
    node = helper.make_node
    trunk = [node(op, [f"h{i}", f"w{i}"] if op == "MatMul" else [f"m{i}"], [f"m{i}" if op == "MatMul" else f"h{i + 1}"])
             for i in range(layers) for op in ("MatMul", "Relu")]
    graph = helper.make_graph(
        [node("Identity", ["x"], ["h0"]), *trunk, node("Sigmoid", [f"h{layers}"], ["p"]),
         node("Greater", ["p", "t"], ["mask"]), node("NonZero", ["mask"], ["where"]),
         node("Transpose", ["where"], ["index"], perm=[1, 0]), node("GatherND", ["p", "index"], ["y"])], "boxes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["k"]),
         helper.make_tensor_value_info("index", TensorProto.INT64, ["k", 2])],
        [*(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) / 2, f"w{i}") for i in range(layers)),
         numpy_helper.from_array(np.array(threshold, np.float32), "t")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _quantize(tmp_path, capsys, threshold: float) -> str:
    model = _boxes_above(tmp_path / "m.onnx", threshold)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32))
    assert main(["quantize", model, "--platform", "onnxruntime", "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "q.onnx")]) == 0
    out = capsys.readouterr()
    return out.out + out.err


def test_outputs_empty_on_every_sample_are_not_measured_as_exact(tmp_path, capsys):
    """Nothing to compare read as an infinite SNR: the fallback's gate said 'output SNR inf dB >= enough_snr_db 30'
    and the summary said nothing of float vs quantized."""
    text = _quantize(tmp_path, capsys, 2.0)  # a sigmoid never exceeds 2: no row kept
    assert "SNR inf" not in text and "exact" not in text
    assert "y: empty on every sample in both models: nothing compared" in text
    assert "index: empty on every sample in both models: nothing compared" in text
    assert "cannot be measured: no floating-point graph output holds an element on these samples" in text


def test_outputs_whose_rows_change_once_quantized_are_measured_on_the_other_samples(tmp_path, capsys):
    """Quantization moves scores near the threshold across it: the quantized run keeps another number of rows on
    some samples. The fallback's gate broadcast 1 quantized row against 3 float ones (58.57 dB where the summary,
    measuring the same 8 samples but that one, says 58.2), and rows of other numbers stopped quantize ('operands
    could not be broadcast together with shapes (19,) (21,)'); the gate leaves those samples out as the summary."""
    text = _quantize(tmp_path, capsys, 0.5)  # p > 0.5 where the last Relu is positive: some rows only just
    gate = float(re.search(r"output SNR ([0-9.]+) dB measured on onnxruntime", text).group(1))
    summary = float(re.search(r"y: SQNR ([0-9.]+) dB, cosine [0-9.]+ \(its shape differs from the float model's "
                              r"on 1 of 8 samples", text).group(1))
    assert round(gate, 1) == summary


def test_output_error_leaves_out_runs_of_another_shape():
    error = OutputsError()
    error.update({"y": np.ones(19, np.float32)}, {"y": np.ones(21, np.float32)})
    error.update({"y": np.ones(3, np.float32)}, {"y": np.ones(1, np.float32)})
    assert error.reshaped == {"y": 2} and not error.compared and math.isnan(error.snr_db)
    error.update({"y": np.array([1.0, 2.0], np.float32)}, {"y": np.array([1.0, 2.5], np.float32)})
    assert error.compared and error.snr_db == pytest.approx(10 * math.log10(5 / 0.25))
