"""The parameter passes and the onnxruntime export run without torch: a fresh process restores a calibrated state
(activation ranges, aligned), computes the parameters' scales (ParameterQuantize), bakes and exports, and
writes the very file the whole pipeline wrote, without importing torch.

The process imports only those modules: the planning and calibration passes before them are other modules'
concern (their own tests check them)."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import qtool
from qtool.testing.models import calibration_file, small_model

#: the accuracy passes that would change the model before the state is saved, off: the restored graph is the model
UNCHANGED_MODEL = {"equalization": False, "channel_split": False, "outlier_outputs": False, "fallback": False}

SCRIPT = """
import sys
from pathlib import Path

import qtool
from qtool.passes.baking import Baking
from qtool.passes.parameter_quantize import ParameterQuantize
from qtool.passes.passive_parameter_quantize import PassiveParameterQuantize
from qtool.state import load_state
from qtool_onnxruntime.export import export

model, state, output = sys.argv[1:]
graph = qtool.load(model)
load_state(graph, state)
runs = [step(graph) for step in (ParameterQuantize(), PassiveParameterQuantize(), Baking())]
print(sorted(runs[0].details["quantized"]))
export(graph, Path(output), qtool.ExportOptions())
print("torch" in sys.modules)
"""


@pytest.mark.parametrize("platform", ["onnxruntime", "onnxruntime-int32bias"])
def test_parameter_passes_and_export_import_no_torch(tmp_path, platform):
    model = small_model(tmp_path / "small.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "calib.npz")
    expected, state = tmp_path / "pipeline.onnx", tmp_path / "state.json"
    qtool.quantize(str(model), platform, str(calib), accuracy=UNCHANGED_MODEL, output=expected,
                   save_state=state)
    parameters = {t.name for t in onnx.load(model).graph.initializer}
    saved = json.loads(state.read_text())
    reset = []
    for record in saved["ops"].values():
        for item in record.get("inputs") or []:
            if item and item["tensor"] in parameters and "dominator" not in item and not item.get("passive"):
                item.update(state="initial", scale=None, offset=None)  # as before ParameterQuantize
                reset.append(item["tensor"])
    assert len(reset) == 3  # the weights of conv1, conv2 and fc
    state.write_text(json.dumps(saved))

    output = tmp_path / "restored.onnx"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(state), str(output)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    quantized, torch_imported = done.stdout.strip().splitlines()
    assert quantized == str(sorted(reset))
    assert torch_imported == "False"
    assert output.read_bytes() == expected.read_bytes()
