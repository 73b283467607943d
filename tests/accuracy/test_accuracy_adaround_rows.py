"""AdaRound on sampled rows: a layer's output at sampled positions is exactly the op's; branches all get rounded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
import torch
import torch.nn.functional as F
from accuracy_helpers import digits, export, quantize
from onnx import TensorProto, helper, numpy_helper
from qtool.passes.accuracy.adaround import AdaRound
from qtool.passes.accuracy.layers import run_op
from qtool.passes.accuracy.rows import layer_rows
from test_accuracy_adaround import W4A8
from torch import nn


def _one_op(tmp_path, op_type: str, x_shape, weight: np.ndarray, bias: np.ndarray | None, **attrs) -> qtool.Graph:
    inits = [numpy_helper.from_array(weight, "w")] + ([numpy_helper.from_array(bias, "b")] if bias is not None else [])
    node = helper.make_node(op_type, ["x", "w"] + (["b"] if bias is not None else []), ["y"], name="layer", **attrs)
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                          x_shape)],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "layer.onnx")
    return qtool.load(tmp_path / "layer.onnx")


CASES = [  # op, input shape, weight shape, bias, attributes
    ("Conv", [3, 8, 11, 13], (16, 8, 3, 3), True, {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ("Conv", [3, 12, 9, 9], (12, 1, 5, 5), True, {"group": 12, "pads": [2, 2, 2, 2]}),  # depthwise
    ("Conv", [2, 8, 10, 10], (12, 2, 3, 3), False, {"group": 4, "dilations": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("MatMul", [2, 7, 10], (10, 6), False, {}),
    ("Gemm", [9, 10], (6, 10), True, {"transB": 1, "alpha": 0.5, "beta": 2.0}),
]


@pytest.mark.parametrize(("op_type", "x_shape", "w_shape", "has_bias", "attrs"), CASES)
def test_rows_reproduce_the_op(tmp_path, op_type, x_shape, w_shape, has_bias, attrs):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(w_shape).astype(np.float32)
    channels = w_shape[0] if op_type != "MatMul" else w_shape[1]
    bias = rng.standard_normal(channels).astype(np.float32) if has_bias else None
    graph = _one_op(tmp_path, op_type, x_shape, weight, bias, **attrs)
    op = graph.operations["layer"]
    args = [torch.from_numpy(rng.standard_normal(x_shape).astype(np.float32)), torch.from_numpy(weight)]
    args += [torch.from_numpy(bias)] if has_bias else []
    full = run_op(graph, op, args, "cpu")[0]
    rows = layer_rows(op, args)
    assert rows.count(args) * channels == full.numel()
    index = torch.randperm(rows.count(args), generator=torch.Generator().manual_seed(0))[:40]
    got = rows.compute(rows.take(args, index), args[1], args)
    torch.testing.assert_close(got, rows.target(full, index), rtol=1e-5, atol=1e-5)


def test_conv_rows_match_torch_conv(tmp_path):
    weight = np.random.default_rng(1).standard_normal((4, 3, 2, 2)).astype(np.float32)
    graph = _one_op(tmp_path, "Conv", [1, 3, 5, 5], weight, None, strides=[2, 2])
    x = torch.arange(75, dtype=torch.float32).reshape(1, 3, 5, 5)
    args = [x, torch.from_numpy(weight)]
    rows = layer_rows(graph.operations["layer"], args)
    out = F.conv2d(x, args[1], stride=2)  # 1 x 4 x 2 x 2
    everything = torch.arange(4)
    torch.testing.assert_close(rows.target(out, everything), out[0].reshape(4, 4).T)  # position-major rows
    torch.testing.assert_close(rows.take(args, everything)[1], x[0, :, 0:2, 2:4].reshape(-1))  # 2nd patch


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.a(x)), torch.relu(self.b(x))


def test_every_branch_is_rounded(tmp_path):
    calib = digits(0, 64)
    graph = export(_TwoBranches(), torch.zeros(1, 1, 8, 8), tmp_path / "two.onnx")
    runs = quantize(graph, W4A8, calib, after=[AdaRound(calib, iterations=50)])
    layers = runs["AdaRound"].details["layers"]
    assert sorted(r["op"] for r in layers) == ["/a/Conv", "/b/Conv"], runs["AdaRound"].details
    assert all(graph.operations[r["op"]].quant.inputs[1].state is qtool.QuantizationState.BAKED for r in layers)


def test_conv_transpose_learns_on_whole_samples(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2))
    calib = digits(0, 64)
    graph = export(model, torch.zeros(1, 1, 8, 8), tmp_path / "up.onnx")
    runs = quantize(graph, W4A8, calib, after=[AdaRound(calib, iterations=100)])
    layers = {r["op"]: r for r in runs["AdaRound"].details["layers"]}
    up = layers["/2/ConvTranspose"]
    assert up["rows"] is None and layers["/0/Conv"]["rows"] == 512  # 32 samples x 4 x 4 positions
    assert up["kept"] == "adaround" and up["adaround_mse"] < up["nearest_mse"], up
