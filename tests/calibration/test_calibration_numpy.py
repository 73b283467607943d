"""Observers compute in numpy: torch tensors give the same results as numpy arrays, and calibrating on onnxruntime
imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import qtool
import torch
from qtool.calibration import calibrate, make_observer
from qtool.quant import QuantScheme
from qtool.testing import calibration_file, small_model

SCHEMES = {
    "int8": QuantScheme.integer(8),
    "uint8-asym": QuantScheme.integer(8, signed=False, symmetric=False),
    "int8-per-channel": QuantScheme.integer(8, per_channel=True, channel_axis=1),
    "fp8": QuantScheme.floating(4, 3),
}


def _batches() -> list[np.ndarray]:
    """NCHW batches whose range grows (re-binning), with a far outlier, an inf and a nan."""
    rng = np.random.default_rng(0)
    batches = [rng.standard_t(3, (2, 4, 6, 6)).astype(np.float32) * scale for scale in (0.1, 1.0, 7.0)]
    batches[1][0, 2, 3, 3] = 300.0
    batches[2][1, 0, 0, :2] = [np.inf, np.nan]
    return batches


@pytest.mark.parametrize(("name", "scheme"), [
    pytest.param(name, scheme, id=f"{name}-{label}") for name in ("minmax", "percentile", "kl", "mse", "auto")
    for label, scheme in SCHEMES.items() if not (name == "kl" and scheme.is_floating)])  # kl: integer schemes only
def test_a_torch_tensor_gives_the_scales_of_the_same_values_as_a_numpy_array(name, scheme):
    from_numpy, from_torch = make_observer(name, scheme), make_observer(name, scheme)
    for batch in _batches():
        from_numpy.observe(batch)
        # a channels-last view in float64 with grad: detached, made float32 and read in memory order
        tensor = torch.from_numpy(batch.transpose(0, 2, 3, 1).astype(np.float64)).requires_grad_().permute(0, 3, 1, 2)
        from_torch.observe(tensor)
    for ours, theirs in zip(from_torch.compute(), from_numpy.compute(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert from_torch.count == from_numpy.count and from_torch.nonfinite == from_numpy.nonfinite == 2
    if name == "auto":
        assert from_torch.chosen == from_numpy.chosen


_CALIBRATE_ALONE = textwrap.dedent("""
    import json, sys
    import qtool
    from qtool.passes.runtime_calibration import RuntimeCalibration
    from qtool.quant import OpQuantConfig, QuantScheme, TensorQuantizationConfig

    graph = qtool.load(sys.argv[1])
    scheme = QuantScheme.integer(8, signed=False, symmetric=False, observer="auto")
    configs = {}
    for op in graph.topological_order():
        inputs = [None if v is None or v.is_parameter else TensorQuantizationConfig(scheme) for v in op.inputs]
        outputs = [TensorQuantizationConfig(scheme) for _ in op.outputs]
        op.quant = OpQuantConfig(inputs, outputs, quantized=True, reason="test")
        configs.update({v.name: t for v, t in zip(op.outputs, outputs)})
    result = RuntimeCalibration(sys.argv[2]).call(graph)
    print(json.dumps({"torch": "torch" in sys.modules, "engine": result.details["engine"],
                      "scales": {name: float(t.scale) for name, t in configs.items()}}))
""")


def test_calibration_on_onnxruntime_imports_no_torch(tmp_path, attach):
    model = small_model(tmp_path / "model.onnx")
    data = calibration_file(qtool.load(model), tmp_path / "calib.npz", count=6)
    run = subprocess.run([sys.executable, "-c", _CALIBRATE_ALONE, str(model), str(data)], capture_output=True,
                         text=True, timeout=120, check=True)
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["engine"] == "onnxruntime" and found["torch"] is False
    # the same calibration here, on the executor, with torch: the same scales
    graph = qtool.load(model)
    configs = attach(graph, QuantScheme.integer(8, signed=False, symmetric=False, observer="auto"))
    assert calibrate(graph, str(data), progress=False, engine="torch")["engine"] == "torch"
    outputs = {v.name for op in graph.operations.values() for v in op.outputs}
    assert found["scales"].keys() == outputs
    for name, scale in found["scales"].items():
        assert scale == pytest.approx(float(configs[name].scale), rel=1e-3), name
