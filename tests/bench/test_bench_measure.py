"""bench/measure.py counts quantized compute ops from the file itself: a float MatMul never counts."""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import measure


def qdq_and_float_matmul(path) -> str:
    """x -> Q/DQ -> MatMul (weight through DQ) -> Q/DQ -> a float MatMul -> y."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.integers(-100, 100, (8, 8)).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
            numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w_float")]
    node = helper.make_node
    nodes = [node("QuantizeLinear", ["x", "a_scale", "a_zero"], ["xq"]),
             node("DequantizeLinear", ["xq", "a_scale", "a_zero"], ["xd"]),
             node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"]),
             node("MatMul", ["xd", "wd"], ["h"], name="quantized"),
             node("QuantizeLinear", ["h", "a_scale", "a_zero"], ["hq"]),
             node("DequantizeLinear", ["hq", "a_scale", "a_zero"], ["hd"]),
             node("MatMul", ["hd", "w_float"], ["y"], name="float")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [2, 8])], [value("y", TensorProto.FLOAT, [2, 4])],
                              init)
    opsets = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), path)
    return str(path)


def test_coverage_counts_only_compute_ops_fed_through_dequantize(tmp_path):
    share = measure.coverage(qdq_and_float_matmul(tmp_path / "m.onnx"))
    assert (share.part, share.whole, share.float_ops) == (1, 2, ["float"])


def test_ort_integer_share_reads_the_graph_onnxruntime_optimizes(tmp_path):
    share = measure.ort_integer_share(qdq_and_float_matmul(tmp_path / "m.onnx"))
    assert (share.part, share.whole) == (1, 2) and share.float_ops == ["MatMul"]


def test_sqnr():
    x = np.ones(100, np.float32)
    assert measure.sqnr_db([x], [x]) == float("inf")
    assert abs(measure.sqnr_db([x], [x * 1.1]) - 20.0) < 1e-4  # float32 1.1
    tiny = x * 1e-25  # logits that vanish (a random MobileViT's): the ratio is what it is, 20 dB (read 177.6)
    assert abs(measure.sqnr_db([tiny], [tiny * 1.1]) - 20.0) < 1e-3
    assert measure.sqnr_db([x * 0], [x]) == float("-inf")


def test_run_measured_times_the_child_to_its_end_and_kills_it_at_the_timeout():
    script = ("import json, os, sys, time; sys.stderr.write('noise ' * 40000 + '\\nlast line'); time.sleep(0.2); "
              "open(os.environ['MEASURE_RESULT'], 'w').write(json.dumps({'done': 1}))")
    result, seconds, peak = measure.run_measured([sys.executable, "-c", script], timeout=30)
    assert result == {"done": 1}  # 240 KB of stderr (more than a pipe holds) did not stall it
    assert 0.2 <= seconds < 5 and peak > 0

    result, seconds, _ = measure.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert result["error"].startswith("timed out after") and seconds < 10

    result, _, _ = measure.run_measured([sys.executable, "-c", "import sys; sys.exit('broken model')"], timeout=30)
    assert result == {"error": "exit 1: broken model"}
