"""Fixtures for the executor tests: ORT reference runs and a tolerance check.

``bench/`` goes on ``sys.path`` so that tests can import ``torch_models``, the
torch.nn models shared with the benchmarks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # last: bench/ holds generic names


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], extra_outputs: list[str] = ()) -> dict:
    """Outputs of ``model`` in onnxruntime (CPU), by name; ``extra_outputs`` exposes intermediates."""
    if extra_outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in extra_outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4, what: str = "output") -> None:
    """Same shape and dtype; max |diff| within ``rel`` of the reference's largest magnitude."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= rel * scale, f"{what}: max |diff| {err:.3g} exceeds {rel:g} x {scale:.3g}"


@pytest.fixture
def ort_outputs():
    return run_ort


@pytest.fixture
def close():
    return assert_close
