"""The auto observer picks, per tensor, the method with the least quantization error."""

import numpy as np
import torch
from qtool.calibration import make_observer
from qtool.quant import QuantScheme, fake_quantize

INT8_ASYM = QuantScheme.integer(8, symmetric=False)
INT8_PER_CHANNEL = QuantScheme.integer(8, per_channel=True, channel_axis=1)


def error(x: torch.Tensor, scheme, observer_name: str) -> float:
    observer = make_observer(observer_name, scheme)
    observer.observe(x)
    scale, offset = observer.compute()
    return float(((fake_quantize(x, scheme, scale, offset) - x) ** 2).sum())


def test_heavy_tails_get_a_clipping_method_and_beat_each_single_method():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.concatenate([rng.standard_normal(200_000), [80.0, -60.0]]).astype(np.float32))
    auto = make_observer("auto", INT8_ASYM)
    auto.observe(x)
    auto.compute()
    assert auto.chosen[0] != "minmax"
    best_single = min(error(x, INT8_ASYM, name) for name in ("minmax", "percentile", "kl", "mse"))
    assert error(x, INT8_ASYM, "auto") <= best_single * 1.02
    assert error(x, INT8_ASYM, "auto") < error(x, INT8_ASYM, "minmax") * 0.8


def test_uniform_data_keeps_the_full_range():
    x = torch.from_numpy(np.random.default_rng(1).uniform(-3, 3, 100_000).astype(np.float32))
    auto = make_observer("auto", INT8_ASYM)
    auto.observe(x)
    scale, offset = auto.compute()
    assert error(x, INT8_ASYM, "auto") <= error(x, INT8_ASYM, "minmax") * 1.05
    assert float(scale) * 255 > 5.9  # nothing meaningful clipped


def test_per_channel_choices_and_float_schemes():
    rng = np.random.default_rng(2)
    uniform = rng.uniform(-1, 1, (4000, 1))
    tailed = np.concatenate([rng.standard_normal((3999, 1)), [[40.0]]])
    x = torch.from_numpy(np.concatenate([uniform, tailed], axis=1).astype(np.float32))
    auto = make_observer("auto", INT8_PER_CHANNEL)
    auto.observe(x)
    scale, _ = auto.compute()
    assert auto.chosen[1] != "minmax" and scale[1] < 40.0 / 127  # the outlier channel is clipped
    assert scale[0] > 0.99 / 127  # the uniform channel keeps (nearly) its whole range
    fp8 = QuantScheme.floating(4, 3)
    assert error(x[:, 1], fp8, "auto") <= error(x[:, 1], fp8, "minmax") * 1.01  # no KL for floats, still works
