"""Configurations that crashed: per-channel activations through a Flatten, a Conv weight per channel on axis 1
with an int32 bias. Both now quantize, run in ORT, and say what stayed float."""

import numpy as np
import onnx
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.testing.models import calibration_file, small_model


def pooled_model(folder):
    rng = np.random.default_rng(0)

    def param(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c1"], ["mp"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["mp"], ["fl"], name="flatten"),
             helper.make_node("Gemm", ["fl", "w2", "b2"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "pooled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [param("w1", 4, 3, 3, 3), param("b1", 4), param("w2", 5, 64), param("b2", 5)])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10),
                    folder / "m.onnx")
    np.savez(folder / "c.npz", x=rng.standard_normal((8, 3, 8, 8)).astype(np.float32))
    return folder / "m.onnx", folder / "c.npz"


def test_per_channel_activations_stop_at_a_flatten(tmp_path):
    model, calib = pooled_model(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[activation]\ngranularity = "per_channel"\n')
    result = qtool.quantize(model, "onnxruntime", calib, config=config, output=tmp_path / "q.onnx")
    flatten = result.graph.operations["flatten"].quant
    assert not flatten.quantized and "cannot pass through Flatten" in flatten.reason
    assert result.graph.operations["pool"].quant.quantized  # MaxPool keeps the channel layout
    assert result.agreement["max_steps"] <= 1 and result.agreement.get("error") is None
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["cosine"] > 0.99


def test_a_conv_weight_per_channel_off_its_output_axis_keeps_the_bias_float(tmp_path):
    model = small_model(tmp_path / "m.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "c.npz")
    config = tmp_path / "c.toml"
    config.write_text('[weight]\ngranularity = "per_channel"\naxis = 1\n')
    result = qtool.quantize(model, "onnxruntime-int32bias", calib, config=config, output=tmp_path / "q.onnx")
    conv1 = result.graph.operations["conv1"].quant
    bias = conv1.inputs[2]
    assert not bias.is_quantizing  # int32 was asked; it cannot apply here
    assert "not on its output axis 0" in bias.notes["reason"]
    assert result.agreement.get("error") is None
    assert result.summary["float_vs_quantized"]["outputs"]["output"]["cosine"] > 0.99
