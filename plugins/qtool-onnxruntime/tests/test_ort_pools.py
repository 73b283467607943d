"""A mean over the spatial axes between quantized tensors (a squeeze-excitation block's pooling) is written as the
GlobalAveragePool it computes, which ONNX Runtime runs as an integer kernel, QLinearGlobalAveragePool, instead
of DequantizeLinear -> float ReduceMean -> QuantizeLinear; where ORT's channels-first kernel would lose (a pooled
area under 16 values) or the axes are dropped (keepdims 0), the ReduceMean stays."""

import numpy as np
import onnx
import qtool
import torch
from ort_testkit import optimized_ops, torch_proto
from ort_testkit import run as ort_run
from qtool.testing.models import calibration_file


class Excite(torch.nn.Module):
    """Conv -> HardSwish -> x * gate(mean(x)) -> Conv, the gate a Conv -> Relu -> Conv -> HardSigmoid; then a
    classifier's mean without the spatial axes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.reduce, self.expand = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)
        self.head = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = torch.nn.functional.hardswish(self.stem(x))
        gate = torch.nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = torch.relu(self.head(x * gate))
        return self.fc(x.mean((2, 3)))


def _quantize(tmp_path, size: int):
    model = tmp_path / "excite.onnx"
    onnx.save(torch_proto(Excite(), torch.randn(1, 3, size, size), opset=17), model)
    calib = calibration_file(qtool.load(model), tmp_path / "calib.npz")
    return model, qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx", check_agreement=True)


def test_a_spatial_mean_between_quantized_tensors_runs_as_an_integer_global_average_pool(tmp_path):
    model, result = _quantize(tmp_path, 8)

    written = onnx.load(result.files[0])
    assert [n.op_type for n in written.graph.node].count("GlobalAveragePool") == 1
    ops = optimized_ops(result.files[0], tmp_path)
    assert ops.count("QLinearGlobalAveragePool") == 1
    assert ops.count("ReduceMean") == 1  # the classifier's, keepdims 0: no GlobalAveragePool keeps its shape
    assert result.agreement["max_steps"] <= 1
    feed = {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected, got = ort_run(model, feed)[0], ort_run(result.files[0], feed)[0]
    assert np.linalg.norm(got - expected) < 0.1 * np.linalg.norm(expected)


def test_a_mean_over_fewer_than_16_values_stays_a_reduce_mean(tmp_path):
    """A 2 x 2 input: ORT's channels-first integer kernel costs about 10 ns a channel, more than it saves there."""
    _, result = _quantize(tmp_path, 2)

    assert "GlobalAveragePool" not in {n.op_type for n in onnx.load(result.files[0]).graph.node}
    ops = optimized_ops(result.files[0], tmp_path)
    assert "QLinearGlobalAveragePool" not in ops and ops.count("ReduceMean") == 2


def test_a_pooled_area_the_model_leaves_open_is_read_from_what_calibration_saw(tmp_path):
    """Height and width left to the caller: the area the calibration feeds gave (8 x 8) decides, where ONNX shape
    inference (run before for shapes the model does not state) finds no number."""
    proto = torch_proto(Excite(), torch.randn(1, 3, 8, 8), opset=17)
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width"), strict=True):
        dim.dim_param = name
    del proto.graph.value_info[:]
    model, calib = tmp_path / "excite.onnx", tmp_path / "calib.npz"
    onnx.save(proto, model)
    np.savez(calib, input=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))

    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx")

    pooled = next(op for op in result.graph.operations.values() if op.op_type == "ReduceMean" and
                  op.attributes.get("keepdims", 1) == 1)
    assert result.graph.observed_shapes[pooled.inputs[0].name] == (1, 16, 8, 8)
    assert [n.op_type for n in onnx.load(result.files[0]).graph.node].count("GlobalAveragePool") == 1
