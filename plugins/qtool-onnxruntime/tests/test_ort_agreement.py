"""agreement(): the exported model in ORT against qtool's simulation (TorchExecutor)."""

from __future__ import annotations

import pytest
import qtool
from ort_testkit import (
    INT8_ASYM,
    INT8_PER_CHANNEL,
    UINT8,
    calibrated,
    export,
    resnetish_proto,
    samples_for,
    simulate,
    transformer_proto,
)

PLATFORM = {"int32": "onnxruntime-int32bias", "float": "onnxruntime"}


def _report(graph, path, platform: str, count: int = 8, shift=None):
    samples = samples_for(graph, count, seed=7)
    simulated = simulate(graph, samples)
    if shift is not None:
        simulated = [[shift(out) for out in outs] for outs in simulated]
    return qtool.get_platform(platform).agreement(graph, [path], samples, simulated)


@pytest.mark.parametrize("bias", ["int32", "float"])
@pytest.mark.parametrize("activation", [INT8_ASYM, UINT8], ids=["int8", "uint8"])
def test_int8_cnn_within_one_step(bias, activation, tmp_path):
    graph = calibrated(resnetish_proto(), activation, INT8_PER_CHANNEL, bias=bias, fuse=True)
    path = export(graph, tmp_path, PLATFORM[bias], remove_activations=True)
    report = _report(graph, path, PLATFORM[bias])
    assert report["samples"] == 8 and report["runtime"].startswith("onnxruntime ")
    assert report["max_steps"] <= 1
    assert report["outputs"]["output"]["cosine"] > 0.9999


def test_disagreement_is_measured_in_output_steps(tmp_path):
    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL, bias="int32")
    path = export(graph, tmp_path, "onnxruntime-int32bias")
    step = float(graph.outputs[0].producer.quant.outputs[0].scale)
    report = _report(graph, path, "onnxruntime-int32bias", shift=lambda out: out + 3 * step)
    assert 2 <= report["max_steps"] <= 4


def test_float_outputs_are_compared_relatively(tmp_path):
    graph = calibrated(transformer_proto(), UINT8, INT8_PER_CHANNEL)  # the kit puts MatMul scales on axis 1
    path = export(graph, tmp_path)
    report = _report(graph, path, "onnxruntime", count=4)
    assert report["max_steps"] is None
    output = report["outputs"]["output"]
    assert output["max_relative"] < 0.05 and output["cosine"] > 0.999
    worse = _report(graph, path, "onnxruntime", count=4, shift=lambda out: -out)
    assert worse["min_cosine"] < -0.99



def test_run_gives_the_exported_models_outputs_per_sample(tmp_path):
    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL, fuse=True)
    path = export(graph, tmp_path, "onnxruntime", remove_activations=True)
    samples = samples_for(graph, 3, seed=7)
    ran = qtool.get_platform("onnxruntime").run([path], samples, ["output"])
    simulated = simulate(graph, samples)
    assert len(ran) == 3 and all(len(outs) == 1 for outs in ran)
    for (ours,), (theirs,) in zip(ran, simulated, strict=True):
        assert ours.shape == theirs.shape and not (ours == 0).all()
        assert abs(ours - theirs).max() <= 2 * abs(theirs).max() / 255  # within one output step or so


def test_a_platform_without_a_runtime_says_so():
    class Paper(qtool.Platform):
        name = "paper"

    with pytest.raises(qtool.RuntimeUnavailable, match="platform 'paper' cannot run its files here"):
        Paper().run([], [], [])


def test_samples_whose_output_shapes_differ_are_counted_not_compared(tmp_path):
    """An output whose length depends on the values (NonZero, NonMaxSuppression) can keep other elements in the
    written model than in the simulation: those samples are counted, the others compared (it raised before)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    node = helper.make_node
    graph = helper.make_graph(
        [node("Greater", ["x", "t"], ["mask"]), node("NonZero", ["mask"], ["where"]),
         node("Squeeze", ["where", "axis"], ["index"]), node("Gather", ["x", "index"], ["y"])], "kept",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "t"),
         numpy_helper.from_array(np.array([0], np.int64), "axis")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    samples = [{"x": np.array(v, np.float32)} for v in ([0.9, 0.1, 0.7, 0.2], [0.48, 0.9, 0.1, 0.6])]
    simulated = [[np.array([0.9, 0.7], np.float32)], [np.array([0.48, 0.9, 0.6], np.float32)]]  # kept 0.48 too
    report = qtool.get_platform("onnxruntime").agreement(qtool.load(tmp_path / "m.onnx"), [tmp_path / "m.onnx"],
                                                          samples, simulated)
    assert report["outputs"]["y"]["shape_differs"] == 1 and report["min_cosine"] == 1.0
    report = qtool.get_platform("onnxruntime").agreement(qtool.load(tmp_path / "m.onnx"), [tmp_path / "m.onnx"],
                                                          samples[1:], simulated[1:])
    assert report["outputs"]["y"] == {"cosine": None, "shape_differs": 1} and report["min_cosine"] is None


def test_nan_in_both_agrees_and_nan_in_one_alone_is_counted(tmp_path):
    """A float output NaN where both models are (a Sqrt of negatives) made every difference NaN and the cosine 0;
    the differences are taken on the finite elements now, and those NaN in one of the two alone are counted."""
    import numpy as np

    graph = calibrated(transformer_proto(), UINT8, INT8_PER_CHANNEL)
    path = export(graph, tmp_path)
    report = _report(graph, path, "onnxruntime", count=4, shift=lambda out: np.where(out > 0, out, np.nan))
    output = report["outputs"]["output"]
    assert output["cosine"] > 0.999 and output["max_relative"] < 0.05
    assert output["nonfinite_differs"] > 0  # the simulation's NaN, where the written model's values are finite
    both = _report(graph, path, "onnxruntime", count=4)
    assert "nonfinite_differs" not in both["outputs"]["output"]
