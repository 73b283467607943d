"""The two ONNX Runtime platforms: registration, the platform contract, defaults and capabilities."""

from __future__ import annotations

import onnx
import pytest
import qtool
from ort_testkit import UINT8, calibrated, optimized_ops, resnetish_proto
from qtool.config import resolve_config
from qtool.quant import QuantScheme
from qtool.testing import PlatformContract, quantize_by_hand
from qtool_onnxruntime import OnnxRuntimeInt32BiasPlatform, OnnxRuntimePlatform
from qtool_onnxruntime.activations import ACTIVATIONS

PLATFORMS = {"onnxruntime": "float", "onnxruntime-int32bias": "int32"}


class TestOnnxRuntimeContract(PlatformContract):
    platform_name = "onnxruntime"


class TestOnnxRuntimeInt32BiasContract(PlatformContract):
    platform_name = "onnxruntime-int32bias"

    def calibrated_graph(self, model_path):
        return quantize_by_hand(qtool.load(model_path), bias="int32")


def test_one_class_two_bias_modes():
    assert issubclass(OnnxRuntimeInt32BiasPlatform, OnnxRuntimePlatform)
    own = {key for key in vars(OnnxRuntimeInt32BiasPlatform) if not key.startswith("__")}
    assert own == {"name", "description", "bias_mode"}


@pytest.mark.parametrize("name,bias", PLATFORMS.items())
def test_default_config_resolves_to_what_ort_fuses(name, bias, tmp_path):
    platform = qtool.get_platform(name)
    config = resolve_config(platform.default_config())
    graph = qtool.load(_write(resnetish_proto(), tmp_path))
    conv = next(op for op in graph.operations.values() if op.op_type == "Conv")
    assert config.scheme_for(conv, "activation") == UINT8.with_changes(observer="auto")  # the default observer
    assert config.scheme_for(conv, "weight", channel_axis=0) == QuantScheme.integer(8, per_channel=True,
                                                                                  channel_axis=0)
    assert config.bias_mode_for(conv) == bias
    assert config.quantize_op_types == {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert config.fused_activations == ACTIVATIONS | {"HardSigmoid"}  # what ORT folds, and squeeze-excite gates
    assert not config.remove_activations


def test_default_schemes_run_as_integer_kernels(tmp_path):
    """With the defaults (uint8 activations, int8 per-channel weights) every Conv and Gemm of a CNN fuses."""
    graph = calibrated(resnetish_proto(), UINT8, QuantScheme.integer(8, per_channel=True, channel_axis=0),
                       bias="int32")
    platform = qtool.get_platform("onnxruntime-int32bias")
    assert platform.validate(graph) == []
    path = platform.export(graph, tmp_path / "cnn", qtool.ExportOptions())[0]
    ops = optimized_ops(path, tmp_path)
    assert ops.count("QLinearConv") == 4 and ops.count("QGemm") == 1
    assert not {"Conv", "Gemm", "FusedConv", "FusedGemm"} & set(ops)


def test_capabilities_declare_what_the_exporter_writes():
    caps = OnnxRuntimePlatform.capabilities
    assert caps.bits == (2, 4, 8, 16)
    assert caps.opsets == (10, 27)
    assert {"int4", "uint4", "int8", "uint8", "int16", "uint16", "int2", "uint2", "float8e4m3fn", "float8e5m2",
            "int32"} == set(caps.formats)
    P = qtool.QuantizationPolicy
    assert P.PER_BLOCK in caps.policies and P.FLOATING in caps.policies and P.DYNAMIC not in caps.policies


def test_listed_by_the_cli(capsys):
    from qtool.cli.main import main

    assert main(["list-platforms", "--json"]) == 0
    listed = capsys.readouterr().out
    assert '"onnxruntime"' in listed and '"onnxruntime-int32bias"' in listed and "qtool-onnxruntime" in listed


def _write(proto, tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    return path
