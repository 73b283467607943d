"""``qtool quantize --metric FILE:FUNCTION --max-drop X``: the user's metric is the fallback budget."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
from qtool.cli.main import main

THREE_BIT_WEIGHTS = "[weight]\nbits = 3\n"  # costs the demo CNN about 2 points of accuracy


def _metric_file(tmp_path, split) -> str:
    np.savez(tmp_path / "eval.npz", x=split.eval_x, y=split.eval_y)
    path = tmp_path / "my_metric.py"
    path.write_text(textwrap.dedent(f"""\
        import numpy as np
        DATA = np.load({str(tmp_path / "eval.npz")!r})

        def accuracy(executor):
            logits = executor.forward({{"image": DATA["x"]}})[0]
            return float((logits.argmax(1) == DATA["y"]).mean())
        """))
    return f"{path}:accuracy"


def _accuracy(path, split) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"image": split.eval_x})[0].argmax(1) == split.eval_y).mean())


def test_the_metric_budget_holds_in_the_exported_model(digits, tmp_path, capsys):
    model, calib, split = digits
    config = tmp_path / "w3.toml"
    config.write_text(THREE_BIT_WEIGHTS)
    plain, kept = tmp_path / "plain.onnx", tmp_path / "kept.onnx"
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "--config", str(config),
                 "-o", str(plain)]) == 0
    float_accuracy = _accuracy(model, split)
    assert float_accuracy - _accuracy(plain, split) > 0.01  # the situation: 3-bit weights cost accuracy
    capsys.readouterr()

    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "--config", str(config),
                 "-o", str(kept), "--metric", _metric_file(tmp_path, split), "--max-drop", "0.005",
                 "--save-state", str(tmp_path / "state.json")]) == 0
    assert "SensitivityFallback" in capsys.readouterr().err
    saved = json.loads((tmp_path / "state.json").read_text())["config"]["accuracy"]["fallback"]
    assert saved["metric"] == "<function qtool_user_metric_my_metric.accuracy>" and saved["max_drop"] == 0.005
    assert float_accuracy - _accuracy(kept, split) <= 0.005 + 1 / len(split.eval_y)  # one sample of ORT vs sim


@pytest.mark.parametrize("arguments, message", [
    (["--metric", "{dir}/nowhere.py:accuracy", "--max-drop", "0.01"], "no such file '{dir}/nowhere.py'"),
    (["--metric", "{dir}/my_metric.py:missing", "--max-drop", "0.01"], "has no function 'missing'"),
    (["--metric", "{dir}/my_metric.py", "--max-drop", "0.01"], "expected FILE.py:FUNCTION"),
    (["--metric", "{dir}/broken.py:accuracy", "--max-drop", "0.01"], "importing '{dir}/broken.py' failed: "
                                                                      "ZeroDivisionError"),
    (["--max-drop", "0.01"], "--metric and --max-drop go together"),
])
def test_bad_metric_arguments_fail_before_any_work(digits, tmp_path, capsys, arguments, message):
    model, calib, split = digits
    _metric_file(tmp_path, split)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    out = tmp_path / "out.onnx"
    arguments = [a.format(dir=tmp_path) for a in arguments]
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o", str(out),
                 *arguments]) != 0
    assert message.format(dir=tmp_path) in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
