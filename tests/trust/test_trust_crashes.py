"""Configurations that crashed: per-channel activations through a Flatten, a Conv weight per channel on axis 1
with an int32 bias. Both now quantize, run in ORT, and say what stayed float."""

import numpy as np
import onnx
import qtool
from qtool.testing.models import calibration_file, pooled_model_proto, small_model


def pooled_model(folder):
    onnx.save_model(pooled_model_proto(), folder / "m.onnx")
    np.savez(folder / "c.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    return folder / "m.onnx", folder / "c.npz"


def test_per_channel_activations_stop_at_a_flatten(tmp_path):
    model, calib = pooled_model(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[activation]\ngranularity = "per_channel"\n')
    result = qtool.quantize(model, "onnxruntime", calib, config=config, output=tmp_path / "q.onnx",
                            check_agreement=True)
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
    assert not bias.is_settled  # int32 was asked; it cannot apply here
    assert "not on its output axis 0" in bias.notes["reason"]
    assert result.agreement.get("error") is None
    assert result.summary["float_vs_quantized"]["outputs"]["output"]["cosine"] > 0.99
