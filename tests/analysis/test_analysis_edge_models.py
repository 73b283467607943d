"""`qtool analyse` on models at the edges: integer outputs only, no op to quantize, data with NaN samples skipped."""

import json
import subprocess
import sys

import numpy as np
import pytest
import qtool
import torch
from torch import nn


class Labels(nn.Module):
    """conv -> Relu -> conv -> ArgMax: the only graph output is int64."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))).argmax(1)


class NoCompute(nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1.0


def _export(module: nn.Module, shape, path):
    torch.onnx.export(module.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def _calib(path, shape, count=8, nan_at=None):
    x = np.random.default_rng(0).standard_normal((count, *shape)).astype(np.float32)
    if nan_at is not None:
        x[nan_at, 0] = np.nan
    np.savez(path, x=x)
    return path


def _analyse(*args):
    result = subprocess.run([sys.executable, "-m", "qtool.cli.main", "analyse", *map(str, args)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split()), " ".join(result.stderr.split())


@pytest.fixture
def labels(tmp_path):
    return _export(Labels(), (3, 6, 6), tmp_path / "labels.onnx"), _calib(tmp_path / "calib.npz", (3, 6, 6))


UNMEASURED = ("layer-wise sensitivity not measured: it is the error at the graph's floating-point outputs, and every "
              "output of this graph ('y') is integer or boolean")


def test_integer_outputs_rank_graphwise_and_say_why_not_layerwise(labels, tmp_path):
    model, calib = labels
    report = qtool.analyse(model, "onnxruntime", calib, samples=4, agreement=False)
    assert {r["op"] for r in report.graphwise} >= {"/conv1/Conv", "/conv2/Conv"}
    assert report.layerwise == [] and report.layerwise_unmeasured == UNMEASURED
    assert f'<p id="layerwise-unmeasured">{UNMEASURED}</p>'.replace("'", "&#x27;") in report.to_html()
    json.loads(report.to_json())  # strict JSON


def test_cli_on_integer_outputs_prints_one_line_for_layerwise(labels):
    model, calib = labels
    out, _ = _analyse(model, "--platform", "onnxruntime", "--calib", calib, "--samples", "4")
    assert "Graph-wise error" in out and "Layer-wise sensitivity" not in out and UNMEASURED in out
    document = json.loads(_analyse(model, "--platform", "onnxruntime", "--calib", calib, "--samples", "4",
                                   "--json")[0])
    assert document["layerwise"] == [] and document["layerwise_unmeasured"] == UNMEASURED


def test_nothing_quantized_is_explained_not_shown_as_empty_tables(tmp_path):
    model = _export(NoCompute(), (16,), tmp_path / "no_compute.onnx")
    out, err = _analyse(model, "--platform", "onnxruntime", "--calib", _calib(tmp_path / "c.npz", (16,)))
    assert "Graph-wise error" not in out and out.startswith("nothing to rank: no op of the model is quantized (")
    assert "warning [coverage.none] nothing is quantized" in err


def test_samples_skipped_for_nan_are_warned_and_counted(tmp_path):
    model = _export(Labels(), (3, 6, 6), tmp_path / "labels.onnx")
    calib = _calib(tmp_path / "nan.npz", (3, 6, 6), count=6, nan_at=2)
    _, err = _analyse(model, "--platform", "onnxruntime", "--calib", calib, "--calib-skip-nonfinite", "--samples", "10")
    assert ("measuring the error of each op on 5 samples (of 10 asked: the calibration data holds no more, "
            "1 sample(s) holding NaN skipped)") in err
    assert "warning [calibration.data]" in err and "skipped 1 calibration sample(s) holding NaN" in err


def _mlp(path, dtype=torch.float32):
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    torch.onnx.export(mlp.eval(), (torch.zeros(1, 16, dtype=dtype),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


def test_a_bfloat16_model(tmp_path):
    """A bfloat16 model's samples (float32 in the file, cast as read) did not become torch tensors: analyse failed
    with a traceback (TypeError: can't convert np.ndarray of type ml_dtypes.bfloat16), and so did
    quantize --min-snr."""
    stdout, _ = _analyse(_mlp(tmp_path / "bf16.onnx", torch.bfloat16), "--platform", "onnxruntime", "--calib",
                         _calib(tmp_path / "c.npz", (16,)), "--samples", "4")
    assert "Layer-wise sensitivity" in stdout


def test_the_fallback_reads_an_npz_without_torchs_warning(tmp_path):
    """An .npz's samples are mapped read-only: the fallback's runs drew torch's UserWarning ('The given NumPy array
    is not writable') on stderr of every quantize --min-snr from a file."""
    result = subprocess.run([sys.executable, "-m", "qtool.cli.main", "quantize", str(_mlp(tmp_path / "m.onnx")),
                             "--platform", "onnxruntime", "--calib", str(_calib(tmp_path / "c.npz", (16,))),
                             "--min-snr", "60", "-o", str(tmp_path / "q.onnx")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "returned to float by sensitivity fallback" in result.stdout and "Warning" not in result.stderr
