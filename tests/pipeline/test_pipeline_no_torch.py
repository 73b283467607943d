"""A default quantize imports no torch: nothing on its path needs qtool's torch simulation (the common goal of
issue 12). Run in a fresh process, which reports where torch was first imported if it was."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import onnxruntime as ort
import pytest

RUN = """
import json, sys, traceback

class FirstTorchImport:  # records who imports torch first, and lets the import go on
    stack = None

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and FirstTorchImport.stack is None:
            FirstTorchImport.stack = "".join(traceback.format_stack()[:-1])
        return None

sys.meta_path.insert(0, FirstTorchImport())
import qtool

model, calib, output = sys.argv[1:]
result = qtool.quantize(model, "onnxruntime", calib, output=output)
print(json.dumps({"torch": "torch" in sys.modules, "first_torch_import": FirstTorchImport.stack,
                  "files": [str(p) for p in result.files], "agreement": result.agreement,
                  "float_vs_quantized": result.summary["float_vs_quantized"]}))
"""


@pytest.mark.xfail(reason="until the np-calib/np-export/fallback-gate branches merge", strict=False)
def test_a_default_quantize_imports_no_torch(cnn_model, calib_npz, tmp_path):
    output = tmp_path / "q.onnx"
    ran = subprocess.run([sys.executable, "-c", RUN, str(cnn_model), str(calib_npz), str(output)],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert found["files"] == [str(output)]
    quantize_linear = [n for n in onnx.load(output).graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize_linear) >= 3  # quantized, not a float copy
    gap = found["float_vs_quantized"]
    assert gap["measured_on"] == f"onnxruntime {ort.__version__} (CPUExecutionProvider), the exported files"
    assert 20 < gap["outputs"]["y"]["sqnr_db"] < 60
    assert "no step of this run used qtool's simulation" in found["agreement"]["skipped"]
    assert not found["torch"], f"torch was imported:\n{found['first_torch_import']}"
