"""pytest fixtures of the plugin author's kit, loaded through the ``pytest11`` entry point.

pytest loads this module in every run where qtool is installed: it only
defines fixtures (importing qtool, but loading no plugins) and builds nothing
until a test asks for a fixture.
"""

from __future__ import annotations

import pytest

from ..ir import load
from .handmade import quantize_by_hand
from .models import calibration_file, small_model


@pytest.fixture
def qtool_small_model(tmp_path):
    """Path of the kit's small Conv/Relu/Add/Gemm ONNX model, written into the test's tmp_path."""
    return small_model(tmp_path / "qtool_small_model.onnx")


@pytest.fixture
def qtool_calibrated_graph(qtool_small_model):
    """The small model loaded and quantized by hand: int8 activations, int8 per-channel weights, float bias."""
    return quantize_by_hand(load(qtool_small_model))


@pytest.fixture
def qtool_calibration_data(qtool_small_model):
    """Path of an .npz with 8 random samples for the small model (key ``input``)."""
    return calibration_file(load(qtool_small_model), qtool_small_model.with_name("qtool_calibration.npz"))
