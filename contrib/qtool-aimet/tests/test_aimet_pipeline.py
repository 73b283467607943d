"""End to end: ``qtool quantize --platform aimet`` with the platform's defaults; the file matches qtool's grid."""

import json

import numpy as np
import pytest
import qtool
from qtool.testing import dequantize


@pytest.mark.parametrize("platform", ["aimet", "aimet-1.0"])
def test_quantized_encodings_reproduce_the_pipelines_grid(qtool_small_model, qtool_calibration_data, tmp_path,
                                                         platform):
    result = qtool.quantize(qtool_small_model, platform, qtool_calibration_data, output=tmp_path / "model.onnx")
    assert [d for d in result.diagnostics if d.severity is qtool.Severity.ERROR] == []
    document = json.loads((tmp_path / "model.encodings").read_text())
    if platform == "aimet":
        encodings = {name: (e["scale"], e["offset"], e["bitwidth"]) for table in ("activation_encodings",
                     "param_encodings") for name, encs in document[table].items() for e in encs[:1]}
    else:
        encodings = {e["name"]: (e["scale"][0], e["offset"][0], e["bw"])
                     for e in document["activation_encodings"] + document["param_encodings"]}
    entries = {t.tensor: t for t in qtool.quantized_tensors(result.graph)}
    assert set(encodings) == set(entries)
    assert entries["input"].scheme.short() == "uint8 asym per-tensor [0, 255]"  # the platform's default
    for name, (scale, offset, bits) in encodings.items():
        entry = entries[name]
        q = np.arange(2**bits) if bits <= 16 else np.array([0, 1, 2**31, 2**32 - 1])
        codes = q + int(entry.scheme.quant_min)
        ours = dequantize(entry.config, codes[None, :])[0] if entry.scheme.is_per_channel else dequantize(
            entry.config, codes)
        np.testing.assert_array_equal(((q + offset) * np.float64(scale)).astype(np.float32), ours)


def test_the_files_name_the_data_file_of_a_model_beyond_one_protobuf(tmp_path, monkeypatch):
    """The model's data file is one of the files written (it was left out of them)."""
    import onnxruntime as ort
    import qtool.ir.onnx_export
    from qtool.testing.models import token_matmuls_model

    monkeypatch.setattr(qtool.ir.onnx_export, "PROTO_LIMIT", 4096)  # lowered: a small model crosses it
    calib = [{"x": np.random.default_rng(0).standard_normal((1, 4, 64)).astype(np.float32)}]
    result = qtool.quantize(token_matmuls_model(tmp_path / "m.onnx"), "aimet", calib, calib_layout="feeds",
                            output=tmp_path / "out" / "q.onnx")
    assert [p.name for p in result.files] == ["q.onnx", "q.onnx.data", "q.encodings"]
    ort.InferenceSession(str(result.files[0]))  # the model reads its data file
