"""Relu / Clip after a computing op: dropped at export exactly where the output grid already clips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from ort_testkit import (
    INT8_ASYM,
    INT8_PER_CHANNEL,
    INT8_SYM,
    UINT8,
    agreement,
    calibrated,
    export,
    nodes,
    resnetish_proto,
    run,
    samples_for,
    simulate,
    single_op_proto,
)
from qtool import ExportOptions, Severity
from qtool.ir import to_model_proto
from qtool_onnxruntime.qdq import QdqWriter


def _fused(activation_op: str, scheme, op: str = "Conv"):
    return calibrated(single_op_proto(op, activation=activation_op), scheme, INT8_PER_CHANNEL, fuse=True,
                      op_types={op})


def _codes(graph, **options):
    return [d.code for d in qtool.get_platform("onnxruntime").validate(graph, ExportOptions(**options))]


@pytest.mark.parametrize("scheme", [UINT8, INT8_ASYM], ids=["uint8", "int8-asym"])
@pytest.mark.parametrize("activation", ["Relu", "Clip"])
def test_dropped_where_the_grid_starts_at_zero(scheme, activation, tmp_path):
    graph = _fused(activation, scheme)
    assert graph.operations["act"].quant.outputs[0].offset == scheme.quant_min  # zero point at the lowest code
    path = export(graph, tmp_path, remove_activations=True)
    model = onnx.load(path)
    assert not nodes(model, activation)
    assert [o.name for o in model.graph.output] == ["y"]
    (q,) = [n for n in nodes(model, "QuantizeLinear") if n.output[0] == "y_q"]
    assert q.input[0] == "pre"  # the Conv output, quantized with the activation's grid
    assert _codes(graph, remove_activations=True) == []
    assert agreement(graph, path)["max_steps"] <= 1


def test_kept_unless_asked(tmp_path):
    graph = _fused("Relu", UINT8)
    model = onnx.load(export(graph, tmp_path))
    assert len(nodes(model, "Relu")) == 1


def test_kept_with_a_note_where_the_grid_goes_below_zero(tmp_path):
    graph = _fused("Relu", INT8_SYM)
    assert _codes(graph, remove_activations=True) == ["ort.perf.activation", "ort.activation-kept"]
    (kept,) = [d for d in qtool.get_platform("onnxruntime").validate(graph, ExportOptions(remove_activations=True))
               if d.code == "ort.activation-kept"]
    assert (kept.severity, kept.op, kept.tensor) == (Severity.WARNING, "act", "y")
    path = export(graph, tmp_path, remove_activations=True)
    assert len(nodes(onnx.load(path), "Relu")) == 1
    assert agreement(graph, path)["max_steps"] <= 1
    # The note is true: without the Relu, negative values survive the symmetric grid.
    dropped = QdqWriter(graph, to_model_proto(graph), graph.opset, {"act": "pre"}).write()
    feeds = samples_for(graph, 1, seed=2)[0]
    assert run(dropped, feeds)[0].min() < 0 <= run(path, feeds)[0].min()


def test_clip_whose_bound_is_inside_the_grid_is_kept(tmp_path):
    graph = _fused("Clip", UINT8)
    graph.operations["act"].quant.outputs[0].set_params(np.float32(8 / 255), np.int32(0))  # grid [0, 8], Clip at 6
    assert "ort.activation-kept" in _codes(graph, remove_activations=True)
    path = export(graph, tmp_path, remove_activations=True)
    assert len(nodes(onnx.load(path), "Clip")) == 1
    feeds = {"x": np.full((1, 8, 6, 6), 3.0, np.float32)}
    dropped = QdqWriter(graph, to_model_proto(graph), graph.opset, {"act": "pre"}).write()
    assert run(dropped, feeds)[0].max() > 6.0 >= run(path, feeds)[0].max()


def test_internal_activations_of_a_cnn(tmp_path):
    graph = calibrated(resnetish_proto(), UINT8, INT8_PER_CHANNEL, fuse=True)
    path = export(graph, tmp_path, remove_activations=True)
    fused = sum(1 for op in graph.operations.values()
                if op.op_type == "Relu" and op.inputs[0].producer.op_type == "Conv")
    assert fused == 3 and len(nodes(onnx.load(path), "Relu")) == 1  # the Relu after the residual Add stays
    samples = samples_for(graph, 4, seed=1)
    report = qtool.get_platform("onnxruntime").agreement(graph, [path], samples, simulate(graph, samples))
    assert report["max_steps"] <= 1
