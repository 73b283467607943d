"""bench/speed.py runs a quantizer in its own process through bench/measure.py and counts its export's ops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import speed


def float_matmul(path) -> str:
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [weight])
    opsets = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), path)
    return path


def test_bench_times_ort_in_its_own_process_and_counts_the_quantized_matmul(tmp_path):
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((2, 8)).astype(np.float32)} for _ in range(4)]
    model = speed.SpeedModel("mm", float_matmul(tmp_path / "mm.onnx"), calib, calib[0])
    rows = speed.bench([model], [speed.BASELINE], threads=1, runs=1, workdir=tmp_path / "work", timeout=120)
    by_config = {row.config: row for row in rows}
    assert (by_config["float"].quantized_ops, by_config["float"].compute_ops) == (0, 1)
    ort = by_config[speed.BASELINE]
    assert ort.error is None and ort.quantize_s > 0 and ort.peak_mib > 0
    assert (ort.quantized_ops, ort.compute_ops) == (1, 1)
    assert set(ort.latency_ms) == {"wall1", "cpu1", "wall2", "cpu2"}
