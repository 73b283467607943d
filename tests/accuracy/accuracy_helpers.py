"""Helpers of the accuracy-pass tests: models, the default pipeline around accuracy passes, ORT runs, SNR."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import qtool
import torch
from qtool.config import resolve_config
from qtool.executor import TorchExecutor
from qtool.ir import to_model_proto
from qtool.passes import PassManager
from qtool.passes.order import default_passes


def export(module: torch.nn.Module, example: torch.Tensor, path) -> qtool.Graph:
    """torch -> ONNX (TorchScript exporter, dynamic batch) -> Graph."""
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return qtool.load(path)


def samples(shape, count: int, seed: int = 0, batch: int = 16, shift: float = 0.0) -> list[dict[str, np.ndarray]]:
    """``count`` samples N(shift, 1) in batches of ``batch``, for input ``x``."""
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((count, *shape)) + shift).astype(np.float32)
    return [{"x": data[i:i + batch]} for i in range(0, count, batch)]


def ort_outputs(graph: qtool.Graph, batches) -> np.ndarray:
    """The first output of ``graph`` as exported, run by onnxruntime over ``batches``."""
    session = ort.InferenceSession(to_model_proto(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, batch)[0] for batch in batches])


def quantize(graph: qtool.Graph, config: dict, data, before=(), after=()) -> dict:
    """The default passes with ``before`` after GraphSimplify and ``after`` before Baking; PassRuns by name."""
    passes = default_passes(resolve_config({}, config), data)
    passes[1:1] = list(before)
    passes[-1:-1] = list(after)
    return {r.name: r for r in PassManager(passes).run(graph)}


def outputs(graph: qtool.Graph, batches, *, quantize: bool = True) -> np.ndarray:
    executor = TorchExecutor(graph)
    executor.quantize = quantize
    return np.concatenate([executor.forward(batch)[0] for batch in batches])


def snr_db(test: np.ndarray, reference: np.ndarray) -> float:
    noise = np.sum((test.astype(np.float64) - reference) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def digits(start: int, count: int, batch: int = 32, flat: bool = False) -> list[dict[str, np.ndarray]]:
    """scikit-learn's 8x8 handwritten digits in [0, 1] (natural, correlated inputs), as (N, 1, 8, 8) or (N, 64)."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[start:start + count] / 16.0).astype(np.float32)
    images = images.reshape(count, 64) if flat else images[:, None]
    return [{"x": images[i:i + batch]} for i in range(0, count, batch)]


def channel_mean_error(test: np.ndarray, reference: np.ndarray, axis: int = 1) -> np.ndarray:
    """|E[test - reference]| per channel along ``axis``."""
    diff = np.moveaxis(test.astype(np.float64) - reference, axis, 0)
    return np.abs(diff.reshape(diff.shape[0], -1).mean(axis=1))
