"""Fixtures of the ONNX Runtime platform tests: model files and calibration data for the pipeline."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from ort_testkit import resnetish_proto, transformer_proto

MODELS = {"cnn": (resnetish_proto, (3, 12, 12)), "transformer": (transformer_proto, (6, 16))}


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, tuple]:
    """name -> (model path, calibration .npz path) for the residual CNN and the tiny transformer."""
    folder = tmp_path_factory.mktemp("ort_models")
    files = {}
    for name, (build, shape) in MODELS.items():
        model, calib = folder / f"{name}.onnx", folder / f"{name}.npz"
        onnx.save(build(), model)
        np.savez(calib, input=np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32))
        files[name] = (model, calib)
    return files
