"""Every encoding written reproduces qtool's grid: (q + offset) * scale for q in [0, 2^bw - 1]."""

import numpy as np
import onnx
import pytest
import qtool
from qtool.testing import dequantize, simulate


def _unsigned_codes(bits):
    if bits <= 16:
        return np.arange(2**bits, dtype=np.int64)
    rng = np.random.default_rng(bits)
    return np.concatenate([[0, 1, 2**(bits - 1), 2**bits - 1], rng.integers(0, 2**bits, 64)])


def _entries(graph):
    return {t.tensor: t for t in qtool.quantized_tensors(graph)}


def _check_channel(entry, channel, scale, offset, bits):
    q = _unsigned_codes(bits)
    assert scale == float(np.float32(scale))  # a float32 value, written exactly
    ours = dequantize(entry.config, (q + int(entry.scheme.quant_min)).reshape(1, -1) if entry.scheme.is_per_channel
                      else q + int(entry.scheme.quant_min))
    ours = ours[channel] if entry.scheme.is_per_channel else ours
    theirs = ((q + offset) * np.float64(scale)).astype(np.float32)
    np.testing.assert_array_equal(theirs, ours)


def test_061_encodings_reproduce_the_grid(aimet_graph, aimet_export):
    document, _ = aimet_export(aimet_graph, "aimet")
    assert document["version"] == "0.6.1"
    entries = _entries(aimet_graph)
    written = {**document["activation_encodings"], **document["param_encodings"]}
    assert sorted(written) == sorted(entries)
    for name, encodings in written.items():
        entry = entries[name]
        assert len(encodings) == entry.scale.size
        for channel, enc in enumerate(encodings):
            assert enc["is_symmetric"] == str(entry.scheme.is_symmetric) and enc["dtype"] == "int"
            _check_channel(entry, channel, enc["scale"], enc["offset"], enc["bitwidth"])
            lo, hi = entry.range
            assert enc["min"] == pytest.approx(float(np.reshape(lo, -1)[channel]), rel=1e-6)
            assert enc["max"] == pytest.approx(float(np.reshape(hi, -1)[channel]), rel=1e-6)


def test_100_encodings_reproduce_the_grid(aimet_graph, aimet_export):
    document, _ = aimet_export(aimet_graph, "aimet-1.0")
    assert document["version"] == "1.0.0"
    entries = _entries(aimet_graph)
    written = document["activation_encodings"] + document["param_encodings"]
    assert sorted(e["name"] for e in written) == sorted(entries)
    for enc in written:
        entry = entries[enc["name"]]
        assert enc["dtype"] == "INT" and enc["is_sym"] is entry.scheme.is_symmetric
        assert enc["enc_type"] == ("PER_CHANNEL" if entry.scheme.is_per_channel else "PER_TENSOR")
        assert len(enc["scale"]) == len(enc["offset"]) == entry.scale.size
        for channel, (scale, offset) in enumerate(zip(enc["scale"], enc["offset"], strict=True)):
            _check_channel(entry, channel, scale, offset, enc["bw"])


def test_symmetric_int8_offset_is_minus_128(qtool_calibrated_graph, aimet_export):
    document, _ = aimet_export(qtool_calibrated_graph, "aimet")
    assert {e["offset"] for encs in document["activation_encodings"].values() for e in encs} == {-128}
    assert document["quantizer_args"] == {"activation_bitwidth": 8, "param_bitwidth": 8, "dtype": "int",
                                          "per_channel_quantization": True, "is_symmetric": True}


def test_simulated_weights_lie_on_the_written_grid(qtool_calibrated_graph, aimet_export):
    """qtool's fake-quantized weights, divided by the encoding's scale, are integers q - offset in range."""
    document, paths = aimet_export(qtool_calibrated_graph, "aimet")
    model = onnx.load(next(p for p in paths if p.suffix == ".onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    entry = _entries(qtool_calibrated_graph)["conv2.weight"]
    simulated = simulate(entry.config, weights["conv2.weight"])
    for channel, enc in enumerate(document["param_encodings"]["conv2.weight"]):
        q = simulated[channel] / np.float32(enc["scale"]) - enc["offset"]
        np.testing.assert_allclose(q, np.round(q), atol=1e-4)
        assert q.min() >= -1e-4 and q.max() <= 2 ** enc["bitwidth"] - 1 + 1e-4
