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
