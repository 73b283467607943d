"""Whole models through the executor in float, against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import qtool
import torch_models
from op_harness import TEST_DEVICE
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))


def test_all_nine_light_models_are_found():
    assert len(LIGHT_MODELS) == 9, LIGHT_MODELS


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_ort(name, ort_outputs, close):
    """The weights are constant fills, so the logits reach 1e9..1e31 and float32 ulps exceed 1 there:
    the final Softmax of them is ill-conditioned. Compare the logits (and every non-Softmax output)."""
    graph = qtool.load(LIGHT / name)
    image = graph.inputs[0]
    x = np.random.default_rng(0).standard_normal(image.shape).astype(np.float32)
    compared = [out.producer.inputs[0].name if out.producer.op_type == "Softmax" else out.name
                for out in graph.outputs]
    ref = ort_outputs(onnx.load(LIGHT / name), {image.name: x}, extra_outputs=compared)
    got = TorchExecutor(graph, TEST_DEVICE).forward([x], compared)
    for tensor, value in zip(compared, got, strict=True):
        close(value, ref[tensor], what=f"{name}:{tensor}")


CNNS = [("resnet18", 16), ("mobilenetv2", 0.5)]


@pytest.fixture(scope="module", params=CNNS, ids=[c[0] for c in CNNS])
def cnn(request):
    name, width = request.param
    return torch_models.cnn_onnx(name, width, size=64)


def test_cnn_matches_ort(cnn, ort_outputs, close):
    x = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    got = TorchExecutor(from_model_proto(cnn), TEST_DEVICE).forward({"image": x})
    close(got[0], ort_outputs(cnn, {"image": x})["logits"])


def test_dynamic_batch_is_kept(cnn, ort_outputs, close):
    executor = TorchExecutor(from_model_proto(cnn), TEST_DEVICE)
    assert executor.graph.inputs[0].shape[0] == "batch"
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
        got = executor.forward([x])[0]
        assert got.shape == (batch, 1000)
        close(got, ort_outputs(cnn, {"image": x})["logits"], what=f"batch {batch}")


@pytest.fixture(scope="module")
def encoder():
    return torch_models.encoder_onnx()


def test_encoder_has_the_bert_ingredients(encoder):
    ops = {node.op_type for node in encoder.graph.node}
    assert {"Gather", "LayerNormalization", "MatMul", "Softmax", "Erf", "Add"} <= ops, ops


@pytest.mark.parametrize("batch,seq", [(2, 16), (3, 7)])
def test_encoder_matches_ort(encoder, batch, seq, ort_outputs, close):
    feeds = torch_models.encoder_inputs(batch, seq)
    got = TorchExecutor(from_model_proto(encoder), TEST_DEVICE).forward(feeds)[0]
    ref = ort_outputs(encoder, feeds)["hidden"]
    assert got.shape == (batch, seq, 64)
    close(got, ref)
    masked = dict(feeds, attention_mask=np.ones_like(feeds["attention_mask"]))
    unmasked = TorchExecutor(from_model_proto(encoder), TEST_DEVICE).forward(masked)[0]
    assert not np.allclose(unmasked, got), "mask had no effect"
