"""An [accuracy] option a pass cannot take is refused by ``qtool explain`` and ``plan()`` too, in the line ``quantize``
gives, and by ``quantize`` before it reads the calibration data; one checker (the passes' own) for all of them."""

from __future__ import annotations

import re

import numpy as np
import pytest
from qtool.cli.main import main
from qtool.config import resolve_config
from qtool.passes.accuracy import AccuracyError
from qtool.pipeline import plan
from qtool.testing.models import SMALL_MODEL_INPUT, small_model

BAD = [  # (the [accuracy] table, what the line says after the file)
    ("adaround = { iterationz = 3 }", "accuracy.adaround.iterationz: unknown option; did you mean 'iterations'?"),
    ('fallback = { min_snr_db = "high" }', "accuracy.fallback.min_snr_db: an SNR budget is a finite number of dB"),
    ("smoothquant = { alpha = 2 }", "accuracy.smoothquant.alpha: must be a number in [0, 1], got 2"),
    ("bias_correction = { inputs = 1 }", "accuracy.bias_correction.inputs: must be \"quantized\" or \"float\""),
]


@pytest.fixture
def model(tmp_path):
    return small_model(tmp_path / "m.onnx")


def _config(tmp_path, table: str):
    path = tmp_path / "bad.toml"
    path.write_text(f"[accuracy]\n{table}\n")
    return path


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one line, no traceback
    return lines[0]


@pytest.mark.parametrize(("table", "message"), BAD)
def test_explain_refuses_what_quantize_refuses_in_the_same_line(model, tmp_path, capsys, table, message):
    config = _config(tmp_path, table)
    expected = f"qtool: error: {config}: {message}"
    assert main(["explain", str(model), "--platform", "onnxruntime", "--config", str(config)]) == 1
    assert _error_line(capsys).startswith(expected)
    assert main(["explain", str(model), "--platform", "onnxruntime", "--config", str(config), "--json"]) == 1
    assert capsys.readouterr().out == ""  # no document that says the config is fine

    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(calib / "0.npz", **{SMALL_MODEL_INPUT: np.zeros((2, 3, 8, 8), np.float32)})
    np.savez(calib / "1.npz", **{SMALL_MODEL_INPUT: np.full((2, 3, 8, 8), np.nan, np.float32)})  # a data error
    out = tmp_path / "out.onnx"
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "--config",
                 str(config), "-o", str(out)]) == 1
    assert _error_line(capsys).startswith(expected)  # the config's error, before any data is read
    assert not out.exists()


def test_plan_refuses_them_as_an_accuracy_error(model, tmp_path):
    config = _config(tmp_path, BAD[0][0])
    with pytest.raises(AccuracyError, match=rf"^{re.escape(str(config))}: {re.escape(BAD[0][1])}"):
        plan(model, "onnxruntime", config=config)
    with pytest.raises(AccuracyError, match=r"^config: accuracy\.fallback\.max_drop: applies to a metric budget only"):
        plan(model, "onnxruntime", config={"accuracy": {"fallback": {"max_drop": 0.01}}})


def test_the_check_needs_no_data_and_takes_good_options(model, tmp_path):
    """Passes that run the model on data are checked without it (explain has none), and the platform's defaults,
    a preset's and good user options pass."""
    from qtool.passes.order import check_accuracy

    config = _config(tmp_path, "adaround = { iterations = 3 }\nbias_correction = true\ngptq = { samples = 4 }")
    check_accuracy(resolve_config({}, config))
    for preset in ("w8a8", "w4a8", "int4-weight-only"):
        assert plan(model, "onnxruntime", preset=preset).graph.operations
