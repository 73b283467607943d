"""Fixtures shared across the core's test areas."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_model  # noqa: E402


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The demo's CNN trained on scikit-learn's digits: (model path, calibration .npz, data split)."""
    workdir = tmp_path_factory.mktemp("digits")
    model, split = digits_model.build(workdir)
    calib = workdir / "calib.npz"
    np.savez(calib, image=split.calib_x)
    return model, calib, split


@pytest.fixture
def qtool_only_op():
    """An op (domain, op_type) that only qtool's executor runs: a copy of its input, registered for the test, so
    the float runs that prefer onnxruntime fall back to the executor."""
    from qtool.executor import ops

    key = ("test.qtool_only", "Copy")
    ops.register_op(key[1], lambda ctx, attrs, inputs: [inputs[0].clone()], key[0])
    yield key
    ops.registry._REGISTRY.pop(key, None)
