"""A metric budget (``--metric FILE.py:FUNCTION``, ``accuracy.fallback.metric``) that cannot work is refused before
calibration reads any data: its arguments are checked as the options are, and it is called once on the float model
(``metric(executor)``, as the fallback's float baseline calls it) before the data is read."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
import qtool
from qtool.cli.main import main
from qtool.passes.accuracy import AccuracyError
from qtool.pipeline import plan
from qtool.testing.models import SMALL_MODEL_INPUT, small_model

X = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
METRICS = textwrap.dedent("""\
    import math
    import numpy as np
    X = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)

    def good(executor):
        return -float(np.abs(executor.forward({"input": X})[0]).mean())

    def two_arguments(executor, labels):
        return 1.0

    def no_argument():
        return 1.0

    def keyword_only(*, executor):
        return 1.0

    def not_a_number(executor):
        executor.forward({"input": X})
        return float("nan")

    def a_string(executor):
        return "good"

    def raising(executor):
        return executor.forward({"input": X})[0]["accuracy"]

    def wrong_input(executor):
        return float(executor.forward({"image": X})[0].mean())
    """)


@pytest.fixture
def files(tmp_path):
    """The model, a calibration folder whose second file holds NaN (read before calibration, it stops the run there:
    an error about the metric instead shows the metric was checked first), and the metric file."""
    model = small_model(tmp_path / "m.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(calib / "0.npz", **{SMALL_MODEL_INPUT: X})
    np.savez(calib / "1.npz", **{SMALL_MODEL_INPUT: np.full_like(X, np.nan)})
    metrics = tmp_path / "metrics.py"
    metrics.write_text(METRICS)
    return model, calib, metrics


BAD = [
    ("two_arguments", r"metrics\.py:two_arguments takes \(executor, labels\): it is "
                      r"called as metric\(executor\) -> float"),
    ("no_argument", r"metrics\.py:no_argument takes \(\): it is called as metric\(executor\)"),
    ("keyword_only", r"metrics\.py:keyword_only takes \(\*, executor\): it is called as metric\(executor\)"),
    ("not_a_number", r"metrics\.py:not_a_number returned nan, not a finite number"),
    ("a_string", r"metrics\.py:a_string returned 'good', not a finite number"),
    ("raising", r"metrics\.py:raising raised IndexError: "),
    ("wrong_input", r"metrics\.py:wrong_input raised \w+Error: .*'image'"),
]


@pytest.mark.parametrize(("name", "message"), BAD, ids=[b[0] for b in BAD])
def test_the_cli_refuses_a_faulty_metric_before_the_data_is_read(files, tmp_path, capsys, name, message):
    model, calib, metrics = files
    out = tmp_path / "out.onnx"
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o", str(out),
                 "--metric", f"{metrics}:{name}", "--max-drop", "0.01"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no pass ran (no progress line), no traceback
    assert lines[0].startswith("qtool: error: accuracy.fallback.metric: ") and re.search(message, lines[0]), lines[0]
    assert "NaN" not in err and not out.exists()


def test_a_good_metric_passes_the_check_and_the_data_is_read_next(files, tmp_path, capsys):
    model, calib, metrics = files
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o",
                 str(tmp_path / "out.onnx"), "--metric", f"{metrics}:good", "--max-drop", "0.01"]) == 1
    assert f"{calib / '1.npz'}: input 'input' sample 0 holds NaN" in capsys.readouterr().err


def test_python_metrics_are_checked_before_any_pass_runs(files):
    model, calib, _ = files
    calls, passes = [], []

    def counted(executor):
        calls.append(len(passes))  # how many passes had run when it was called
        return float(executor.forward({SMALL_MODEL_INPUT: X})[0].mean())

    good = np.concatenate([X, X])
    qtool.quantize(model, "onnxruntime", good, accuracy={"fallback": {"metric": counted, "max_drop": 1.0}},
                   finished=passes.append)
    assert calls[0] == 0 and len(calls) >= 3  # first before any pass; then the fallback's baseline and trials

    def returns_none(executor):
        passes.clear()
        return None

    with pytest.raises(AccuracyError, match=r"^accuracy\.fallback\.metric: .*returns_none returned None, not a finite"):
        qtool.quantize(model, "onnxruntime", good, accuracy={"fallback": {"metric": returns_none, "max_drop": 1.0}},
                       finished=passes.append)
    assert passes == []
    with pytest.raises(AccuracyError, match=r"^config: accuracy\.fallback\.metric: .*<lambda> takes \(a, b\)"):
        plan(model, "onnxruntime", config={"accuracy": {"fallback": {"metric": lambda a, b: 1.0, "max_drop": 1}}})
