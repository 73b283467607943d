"""Every encoding written holds qtool's grid: (q + offset) * scale for q in [0, 2^bw - 1], qtool's codes among them."""

import numpy as np
import onnx
import pytest
import qtool
from qtool.testing import dequantize, quantize_by_hand, simulate


def _unsigned_codes(bits):
    if bits <= 16:
        return np.arange(2**bits, dtype=np.int64)
    rng = np.random.default_rng(bits)
    return np.concatenate([[0, 1, 2**(bits - 1), 2**bits - 1], rng.integers(0, 2**bits, 64)])


def _entries(graph):
    return {t.tensor: t for t in qtool.quantized_tensors(graph)}


def _check_channel(entry, channel, scale, offset, bits, symmetric):
    """AIMET's grid holds qtool's codes c = q + offset + zero point, with the same values; symmetric means
    AIMET's symmetric offset."""
    scheme = entry.scheme
    assert scale == float(np.float32(scale))  # a float32 value, written exactly
    assert symmetric is scheme.is_symmetric and (offset == -2 ** (bits - 1) or not symmetric)
    first = offset + int(np.broadcast_to(entry.offset, entry.scale.shape).reshape(-1)[channel])
    assert first <= scheme.quant_min and scheme.quant_max <= first + 2**bits - 1
    q = _unsigned_codes(bits)
    q = q[(q + first >= scheme.quant_min) & (q + first <= scheme.quant_max)]
    codes = q + first
    ours = dequantize(entry.config, np.tile(codes, (entry.scale.size, 1)))[channel] if scheme.is_per_channel \
        else dequantize(entry.config, codes)
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
            assert enc["is_symmetric"] in ("True", "False") and enc["dtype"] == "int"
            _check_channel(entry, channel, enc["scale"], enc["offset"], enc["bitwidth"], enc["is_symmetric"] == "True")
            scale, offset = np.float64(enc["scale"]), enc["offset"]  # min and max: the ends of the written grid
            assert enc["min"] == pytest.approx(offset * scale, rel=1e-6)
            assert enc["max"] == pytest.approx((2 ** enc["bitwidth"] - 1 + offset) * scale, rel=1e-6)


def test_100_encodings_reproduce_the_grid(aimet_graph, aimet_export):
    document, _ = aimet_export(aimet_graph, "aimet-1.0")
    assert document["version"] == "1.0.0"
    entries = _entries(aimet_graph)
    written = document["activation_encodings"] + document["param_encodings"]
    assert sorted(e["name"] for e in written) == sorted(entries)
    for enc in written:
        entry = entries[enc["name"]]
        assert enc["dtype"] == "INT" and isinstance(enc["is_sym"], bool)
        assert enc["enc_type"] == ("PER_CHANNEL" if entry.scheme.is_per_channel else "PER_TENSOR")
        assert len(enc["scale"]) == len(enc["offset"]) == entry.scale.size
        for channel, (scale, offset) in enumerate(zip(enc["scale"], enc["offset"], strict=True)):
            _check_channel(entry, channel, scale, offset, enc["bw"], enc["is_sym"])


def test_symmetric_int8_offset_is_minus_128(qtool_calibrated_graph, aimet_export):
    document, _ = aimet_export(qtool_calibrated_graph, "aimet")
    assert {e["offset"] for encs in document["activation_encodings"].values() for e in encs} == {-128}
    assert document["quantizer_args"] == {"activation_bitwidth": 8, "param_bitwidth": 8, "dtype": "int",
                                          "per_channel_quantization": True, "is_symmetric": True}


@pytest.mark.parametrize("platform", ["aimet", "aimet-1.0"])
def test_quantizer_args_leave_out_what_float_weights_cannot_show(qtool_small_model, aimet_export, platform):
    """weight = "float": no param width (it was null) and no weight symmetry (it was a vacuous true)."""
    graph = quantize_by_hand(qtool.load(qtool_small_model), weight=None)
    document, _ = aimet_export(graph, platform)
    assert document["quantizer_args"] == {"activation_bitwidth": 8, "dtype": "int", "per_channel_quantization": False}


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
