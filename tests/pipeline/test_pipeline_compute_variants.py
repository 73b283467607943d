"""Every form of Conv, ConvTranspose, Gemm and MatMul that onnx's own node tests cover (strides, pads, auto_pad,
dilations, groups, 1-D and 3-D convolutions, Gemm's transposes, alpha, beta and broadcast bias, MatMul of 1 to 4
dimensions, a dot product's scalar, a Gemm bias of shape (1,), (1, N) or (M, N)), quantized as a model holding it:
its weights initializers, its data input calibrated on four perturbed copies of the case's input; the export runs
close to float, with a float bias (onnxruntime) and an int32 one (onnxruntime-int32bias, aimet)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import qtool
from onnx import numpy_helper
from qtool.ops import COMPUTE_OP_TYPES
from qtool.testing.node_tests import node_test_cases


def _cases():
    return [case for case in node_test_cases()
            if len(case.model.graph.node) == 1 and case.model.graph.node[0].op_type in COMPUTE_OP_TYPES
            and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in case.data_sets[0][0])]


@pytest.mark.parametrize("platform", ["onnxruntime", "onnxruntime-int32bias", "aimet"])  # float and int32 biases
@pytest.mark.parametrize("case", _cases(), ids=lambda case: case.name)
def test_a_compute_op_variant_quantizes_and_runs_close_to_float(case, platform, tmp_path):
    model = copy.deepcopy(case.model)
    graph, inputs = model.graph, case.data_sets[0][0]
    names = [value.name for value in graph.input]
    graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in zip(names[1:], inputs[1:], strict=True))
    del graph.input[1:]
    onnx.save(model, tmp_path / "model.onnx")
    x, rng = inputs[0], np.random.default_rng(0)
    feeds = [{names[0]: (x + rng.normal(size=x.shape) * 0.1 * (np.std(x) + 1e-3)).astype(np.float32)}
             for _ in range(4)]

    every = {"dispatch": {"quantize_op_types": sorted(COMPUTE_OP_TYPES)}}  # ConvTranspose too
    result = qtool.quantize(tmp_path / "model.onnx", platform, feeds, calib_layout="feeds",
                            output=tmp_path / "q.onnx", config=every)

    assert result.summary["coverage"]["compute_ops_quantized"] == 1
    for found in result.summary["float_vs_quantized"]["outputs"].values():
        assert found["sqnr_db"] is None or found["sqnr_db"] > 20
