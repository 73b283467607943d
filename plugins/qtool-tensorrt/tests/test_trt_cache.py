"""Calibration cache: header, float32 bits in 8 hex digits, scale = amax / 127, read back exactly."""

import struct

import numpy as np
import pytest
import qtool
from qtool.testing import quantize_by_hand, retarget
from qtool_tensorrt import TensorRTError, read_cache
from qtool_tensorrt.cache import cache_text, parse_cache, scale_hex, version_number


def _export(graph, folder, **extra):
    paths = qtool.get_platform("tensorrt").export(graph, folder / "model.onnx", qtool.ExportOptions(extra=extra))
    return {p.name: p for p in paths}


def test_export_writes_model_ranges_and_cache(qtool_calibrated_graph, tmp_path):
    files = _export(qtool_calibrated_graph, tmp_path)
    assert sorted(files) == ["model.calibration.cache", "model.onnx", "model.ranges.json"]
    lines = files["model.calibration.cache"].read_text().splitlines()
    assert lines[0] == "TRT-101401-EntropyCalibration2"
    scales = {t.tensor: t.scale for t in qtool.quantized_tensors(qtool_calibrated_graph, roles=["activation"])}
    assert [line.split(": ")[0] for line in lines[1:]] == list(scales)
    for line in lines[1:]:
        name, bits = line.split(": ")
        assert len(bits) == 8 and bits == bits.lower()
        (value,) = struct.unpack(">f", bytes.fromhex(bits))
        assert value == scales[name]  # the float32 scale, bit for bit


def test_scale_is_amax_over_127_and_hex_is_zero_padded():
    assert scale_hex(np.float32(127.0) / np.float32(127)) == "3f800000"
    assert scale_hex(2.0**-140) == "00000200"  # a subnormal: leading zeros kept
    text = cache_text({"x": np.float32(0.5)}, "8.6.1", "MinMaxCalibration")
    assert text == "TRT-8601-MinMaxCalibration\nx: 3f000000\n"


@pytest.mark.parametrize(("given", "number"), [("10.14.1", 101401), ("8.6.1", 8601), ("10.0", 100000),
                                               (101401, 101401), ("8601", 8601)])
def test_version_numbers(given, number):
    assert version_number(given) == number


@pytest.mark.parametrize("given", ["10", 8, "999", "0"])
def test_numbers_below_1000_are_not_encoded_versions(given):
    """TRT-10-... was written for tensorrt_version=10: no TensorRT encodes its version so (10.0 is 100000)."""
    with pytest.raises(TensorRTError, match=rf"^tensorrt_version {given!r}: not an encoded TensorRT version .* "
                                            rf"dotted version such as {int(given)}\.0$"):
        version_number(given)


def test_version_and_calibrator_options_reach_the_header(qtool_calibrated_graph, tmp_path):
    files = _export(qtool_calibrated_graph, tmp_path, tensorrt_version="8.6.1", tensorrt_calibrator="MinMaxCalibration")
    assert files["model.calibration.cache"].read_text().startswith("TRT-8601-MinMaxCalibration\n")
    with pytest.raises(TensorRTError, match="tensorrt_version 'ten'"):
        _export(qtool_calibrated_graph, tmp_path, tensorrt_version="ten")
    with pytest.raises(TensorRTError, match="tensorrt_calibrator 'Magic'"):
        _export(qtool_calibrated_graph, tmp_path, tensorrt_calibrator="Magic")


def test_read_cache_restores_the_exact_scales(qtool_calibrated_graph, qtool_small_model, tmp_path):
    cache = _export(qtool_calibrated_graph, tmp_path)["model.calibration.cache"]
    fresh = quantize_by_hand(qtool.load(qtool_small_model))
    for t in qtool.quantized_tensors(fresh, roles=["activation"]):
        t.config.set_params(np.float32(1.0), np.int32(0))
    report = read_cache(cache, fresh)
    assert report["missing"] == [] and report["unused"] == []
    before = {t.tensor: t.scale for t in qtool.quantized_tensors(qtool_calibrated_graph, roles=["activation"])}
    after = {t.tensor: t.scale for t in qtool.quantized_tensors(fresh, roles=["activation"])}
    assert after == before and report["set"] == sorted(before)
    assert all(t.offset == 0 and t.config.state is qtool.QuantizationState.ACTIVATED
               for t in qtool.quantized_tensors(fresh, roles=["activation"]))


def test_read_cache_reports_unknown_and_missing_tensors(qtool_calibrated_graph, tmp_path):
    cache = tmp_path / "partial.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c000000\nnot_a_tensor: 3c000000\n\n")
    report = read_cache(cache, qtool_calibrated_graph)
    assert report["set"] == ["input"] and report["unused"] == ["not_a_tensor"]
    assert "output" in report["missing"]
    entry = next(qtool.quantized_tensors(qtool_calibrated_graph, roles=["activation"]))
    assert entry.tensor == "input" and entry.scale == np.float32(2.0**-7)


@pytest.mark.parametrize(("text", "where"), [
    ("", "line 1: expected a header"),
    ("TRT-x-Entropy\n", "line 1: expected a header"),
    ("TRT-8601-EntropyCalibration2\ninput 3c000000\n", "line 2: expected '<tensor>: <8 hex digits>'"),
    ("TRT-8601-EntropyCalibration2\n\ninput: 3c0000001\n", "line 3: expected"),
    ("TRT-8601-EntropyCalibration2\ninput: 7fc00000\n", "line 2: tensor 'input' has scale nan"),
])
def test_malformed_caches_name_file_and_line(text, where):
    with pytest.raises(TensorRTError, match=f"^my.cache: {where}"):
        parse_cache(text, "my.cache")


def test_tensor_names_with_colons_are_read(tmp_path):
    _, _, scales = parse_cache("TRT-101401-EntropyCalibration2\nblock:0/out: 3f800000\n", "c")
    assert scales == {"block:0/out": np.float32(1.0)}


def test_reading_into_a_non_int8_activation_is_an_error(qtool_calibrated_graph, tmp_path):
    retarget(qtool_calibrated_graph, "input", qtool.QuantScheme.integer(8, signed=False, symmetric=False))
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c000000\n")
    with pytest.raises(TensorRTError, match=r"c.cache: tensor 'input' is uint8 asym per-tensor .* at op 'conv1'"):
        read_cache(cache, qtool_calibrated_graph)
