"""The README's first command: the demo runs end to end and its agreement line is true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def test_the_demo_quantizes_evaluates_and_agrees_with_onnxruntime(tmp_path):
    ran = subprocess.run([sys.executable, str(DEMO), str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "200"})  # rich folds lines at the width
    assert ran.returncode == 0, ran.stderr[-2000:]
    steps = re.search(r"differ by at most (\S+) quantization steps, cosine similarity (\S+)", ran.stdout)
    assert steps is not None, ran.stdout[-2000:]
    assert float(steps.group(1)) <= 1 and float(steps.group(2)) > 0.999
    accuracy = re.search(r"quantized \(ORT\)\s*│\s*(\S+)%", ran.stdout)
    assert accuracy is not None and float(accuracy.group(1)) > 80
    assert (tmp_path / "digits_int8.onnx").is_file()
