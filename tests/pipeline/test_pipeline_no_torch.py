"""A default quantize imports no torch: nothing on its path needs qtool's torch simulation (the common goal of
issue 12), nor rich (its progress bars are not shown). Run in a fresh process, which reports where torch was
first imported if it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from qtool.testing.control_flow import FEATURES, control_flow_model
from qtool.testing.decoder import tiny_decoder_proto

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
print(json.dumps({"torch": "torch" in sys.modules, "rich": "rich" in sys.modules,
                  "first_torch_import": FirstTorchImport.stack,
                  "files": [str(p) for p in result.files], "agreement": result.agreement,
                  "float_vs_quantized": result.summary["float_vs_quantized"],
                  "coverage": result.summary["coverage"],
                  "bodies": [(b["compute_ops"], b["quantized"]) for b in result.summary["subgraphs"]]}))
"""


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> tuple[Path, Path]:
    """13 compute ops: ChannelSplit, OutlierOutputs and the fallback's outlier scan all run (a model under 10
    compute ops skips the fallback)."""
    folder = tmp_path_factory.mktemp("decoder")
    onnx.save(tiny_decoder_proto(layers=6, outliers=0), folder / "decoder.onnx")
    tokens = np.random.default_rng(0).integers(0, 256, (16, 32)).astype(np.int64)
    np.savez(folder / "calib.npz", input_ids=tokens)
    return folder / "decoder.onnx", folder / "calib.npz"


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> tuple[Path, Path]:
    """A Loop whose body holds a MatMul, between two MatMuls: the body is calibrated on the feeds the main graph's
    float run records."""
    folder = tmp_path_factory.mktemp("loop")
    onnx.save(control_flow_model("loop"), folder / "loop.onnx")
    np.savez(folder / "calib.npz", x=np.random.default_rng(0).standard_normal((16, FEATURES)).astype(np.float32))
    return folder / "loop.onnx", folder / "calib.npz"


@pytest.mark.parametrize("which", ["cnn", "decoder", "loop"])
def test_a_default_quantize_imports_no_torch(which, cnn_model, calib_npz, decoder, loop, tmp_path):
    model, calib, quantized_ops = {"cnn": (cnn_model, calib_npz, 3), "decoder": (*decoder, 13),
                                   "loop": (*loop, 2)}[which]
    output = tmp_path / "q.onnx"
    ran = subprocess.run([sys.executable, "-c", RUN, str(model), str(calib), str(output)],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert found["files"] == [str(output)]
    quantize_linear = [n for n in onnx.load(output).graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize_linear) >= quantized_ops  # quantized, not a float copy
    assert found["coverage"]["compute_ops_quantized"] == found["coverage"]["compute_ops"] >= quantized_ops
    assert found["bodies"] == ([[1, 1]] if which == "loop" else [])  # the Loop body's MatMul quantized too
    gap = found["float_vs_quantized"]
    assert gap["measured_on"] == f"onnxruntime {ort.__version__} (CPUExecutionProvider), the exported files"
    (measured,) = gap["outputs"].values()
    assert 20 < measured["sqnr_db"] < 60
    assert "no step of this run used qtool's simulation" in found["agreement"]["skipped"]
    assert not found["torch"], f"torch was imported:\n{found['first_torch_import']}"
    assert not found["rich"], "rich was imported although no progress bar was asked for"


RELOAD = """
import json, sys
import qtool

model, state, output = sys.argv[1:]
qtool.quantize(model, "onnxruntime", None, load_state=state, output=output)
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def test_a_reload_from_a_state_without_data_imports_no_torch(cnn_model, calib_npz, tmp_path):
    """Deciding which accuracy passes need data imported every pass module, SmoothQuant's with torch: a reload
    took 1.7 s where a full run took 0.5."""
    import qtool

    qtool.quantize(cnn_model, "onnxruntime", calib_npz, save_state=tmp_path / "s.json")
    ran = subprocess.run([sys.executable, "-c", RELOAD, str(cnn_model), str(tmp_path / "s.json"),
                          str(tmp_path / "q.onnx")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"torch": False}
