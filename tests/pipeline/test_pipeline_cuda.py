"""qtool.quantize on CUDA gives what it gives on the CPU (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
import torch
from onnx import numpy_helper


def _scales(path) -> dict[str, np.ndarray]:
    model = onnx.load(path)
    names = {node.input[1] for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in names}


def _logits(path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("accuracy", [None, {"equalization": True, "bias_correction": True}], ids=["default", "passes"])
def test_cuda_run_exports_the_cpu_runs_model(digits, tmp_path, accuracy):
    model, calib, split = digits
    runs = {}
    for device in ("cpu", "cuda"):
        output = tmp_path / f"{device}.onnx"
        runs[device] = qtool.quantize(model, "onnxruntime", calib, output=output, device=device, accuracy=accuracy)
    assert runs["cuda"].agreement["max_steps"] <= 1, runs["cuda"].agreement  # ORT vs the CUDA simulation
    cpu, cuda = _scales(tmp_path / "cpu.onnx"), _scales(tmp_path / "cuda.onnx")
    assert cpu.keys() == cuda.keys() and cpu
    for name in cpu:
        np.testing.assert_allclose(cuda[name], cpu[name], rtol=1e-3, err_msg=name)
    logits = {device: _logits(tmp_path / f"{device}.onnx", split.eval_x) for device in runs}
    agree = (logits["cpu"].argmax(1) == logits["cuda"].argmax(1)).mean()
    assert agree >= 0.995, agree
