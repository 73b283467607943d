"""Fixtures of the pipeline tests: the CNN model file, calibration data, the in-process platform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qtool
import torch
from pipeline_kit import SmallCnn, TinyPlatform
from qtool.platform import PLATFORMS
from qtool.plugins import plugin_manager


@pytest.fixture(scope="session")
def cnn_model(tmp_path_factory) -> Path:
    """The CNN exported without constant folding, so the BatchNormalization is still there."""
    path = tmp_path_factory.mktemp("model") / "cnn.onnx"
    torch.onnx.export(SmallCnn().eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      do_constant_folding=False)
    return path


@pytest.fixture(scope="session")
def calib_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32))
    return path


class _Registration:
    @qtool.hookimpl
    def qtool_register_platforms(self, register):
        register(TinyPlatform)


@pytest.fixture
def tiny_platform():
    """TinyPlatform registered in this process for the test's duration; yields the class."""
    manager = plugin_manager().manager
    plugin = _Registration()
    manager.register(plugin, name="tiny-test-platform")
    PLATFORMS.clear()
    try:
        yield TinyPlatform
    finally:
        manager.unregister(plugin)
        PLATFORMS.clear()
        TinyPlatform.refuse = ()
