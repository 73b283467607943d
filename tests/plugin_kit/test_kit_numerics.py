"""qtool.testing.dequantize / simulate: qtool's numbers for one config."""

import numpy as np
from qtool import QuantScheme, TensorQuantizationConfig
from qtool.testing import dequantize, simulate


def _config(scheme, scale, offset):
    tqc = TensorQuantizationConfig(scheme)
    tqc.set_params(scale, offset)
    return tqc


def test_dequantize_per_tensor_and_per_channel():
    asym = _config(QuantScheme.integer(8, signed=False, symmetric=False), 0.5, 10)
    np.testing.assert_array_equal(dequantize(asym, [0, 10, 255]), [-5.0, 0.0, 122.5])
    per_channel = _config(QuantScheme.integer(4, per_channel=True, channel_axis=1), [0.1, 1.0], [0, 0])
    np.testing.assert_allclose(dequantize(per_channel, [[-8, 7], [-8, 7]]), [[-0.8, 0.7], [-8.0, 7.0]], rtol=1e-6)


def test_simulate_rounds_onto_the_grid_and_clips():
    tqc = _config(QuantScheme.integer(8), 0.25, 0)
    np.testing.assert_array_equal(simulate(tqc, [0.3, 0.375, 100.0, -100.0]), [0.25, 0.5, 31.75, -32.0])
