"""Every installed platform quantizes a trained CNN and a small transformer from the command line."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qtool.cli.main import main
from qtool.cli.platforms import platforms_document

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import torch_models  # noqa: E402

PLATFORMS = [p["name"] for p in platforms_document()["platforms"]]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    path = folder / "encoder.onnx"
    onnx.save(torch_models.encoder_onnx(hidden=32, heads=2, layers=1, vocab=100), str(path))
    calib = folder / "calib.npz"
    np.savez(calib, **torch_models.encoder_inputs(16, 12, vocab=100))
    return path, calib


def test_the_built_in_and_contrib_platforms_are_installed():
    assert {"onnxruntime", "onnxruntime-int32bias", "tensorrt", "text", "aimet"} <= set(PLATFORMS)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_quantize_from_the_command_line(platform, model, digits, encoder, tmp_path, capsys):
    path, calib = (digits[0], digits[1]) if model == "cnn" else encoder
    output = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(path), "--platform", platform, "--calib", str(calib), "-o", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = sorted(output.parent.iterdir())
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert not any(p.name.startswith(".") for p in written)  # no temporary files left behind
    for file in written:
        if file.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(file)))
            session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            feeds = {i.name: a[:2] for i, a in zip(session.get_inputs(), np.load(calib).values(), strict=False)}
            assert all(np.isfinite(o).all() for o in session.run(None, feeds))
        elif file.suffix == ".json":
            assert json.loads(file.read_text())
