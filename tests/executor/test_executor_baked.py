"""After Baking, float simulation still runs the float weights; quantized simulation the baked ones."""

import numpy as np
import onnxruntime as ort
import qtool
from op_harness import TEST_DEVICE
from qtool.executor import TorchExecutor
from qtool.passes.baking import Baking
from qtool.testing import quantize_by_hand, random_inputs, small_model


def test_float_mode_uses_float_weights_after_baking(tmp_path):
    path = small_model(tmp_path / "small.onnx")
    graph = quantize_by_hand(qtool.load(path))
    sample = random_inputs(graph, count=1)[0]
    executor = TorchExecutor(graph, TEST_DEVICE)
    quantized_before = executor.forward(sample)[0]

    assert Baking()(graph).modified
    baked = [v for v in graph.parameters() if v.float_value is not None]
    assert baked and all(not np.array_equal(v.value, v.float_value) for v in baked)
    executor.refresh()
    np.testing.assert_allclose(executor.forward(sample)[0], quantized_before, rtol=1e-5, atol=1e-6)

    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, sample)[0]
    assert not np.allclose(quantized_before, expected, rtol=1e-4, atol=1e-5)
    with executor.mode(quantize=False):
        np.testing.assert_allclose(executor.forward(sample)[0], expected, rtol=1e-4, atol=1e-5)
    with executor.mode(float_ops=graph.operations):
        np.testing.assert_allclose(executor.forward(sample)[0], expected, rtol=1e-4, atol=1e-5)


def test_mode_restores_the_simulated_run_after_an_error(tmp_path):
    executor = TorchExecutor(quantize_by_hand(qtool.load(small_model(tmp_path / "small.onnx"))), TEST_DEVICE)
    try:
        with executor.mode(quantize=False, float_ops={"conv1"}):
            raise RuntimeError("a failing measurement")
    except RuntimeError:
        pass
    assert executor.quantize and executor.float_ops == set()
