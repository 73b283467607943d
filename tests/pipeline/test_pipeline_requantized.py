"""An op's activation override wider than its input's producer: a warning that the extra bits hold nothing."""

from __future__ import annotations

import pytest
import qtool
from qtool.testing.models import calibration_file, small_model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("requantized")
    model = small_model(folder / "m.onnx")
    return model, calibration_file(qtool.load(model), folder / "c.npz")


def _warnings(model, calib, override) -> list:
    result = qtool.quantize(model, "onnxruntime", calib, config={"override": [override]})
    return [d for d in result.diagnostics if d.code == "quant.requantized-wider"]


def test_an_op_reading_its_input_wider_than_written_is_told(small):
    """conv2 at 16-bit activations reads relu_out, which relu writes at 8 bits (explain showed uint16 there)."""
    (found,) = _warnings(*small, {"op_name": "conv2", "activation": {"bits": 16}})
    assert (found.op, found.tensor) == ("relu", "relu_out")
    assert "conv2 read(s) it as uint16" in found.message and "relu writes it as uint8" in found.message


def test_a_tensor_quantized_wider_where_it_is_written_is_not(small):
    assert _warnings(*small, {"tensor": "relu_out", "activation": {"bits": 16}}) == []
