"""The quantization plan: state changes as methods, the two status checks, sites(), and no state set elsewhere."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from qtool import ExportOptions, get_platform
from qtool.ir import from_model_proto
from qtool.quant import QuantScheme, Site, TensorQuantizationConfig, sites
from qtool.quant import QuantizationState as S
from qtool.testing.handmade import quantize_by_hand
from qtool.testing.models import small_model_proto

ROOT = Path(__file__).resolve().parents[2]
PLAN_MODULE = ROOT / "core/src/qtool/quant/plan.py"
INT8 = QuantScheme.integer(8)


def test_life_cycle_through_methods_and_the_two_checks():
    tqc, reader = TensorQuantizationConfig(INT8), TensorQuantizationConfig(INT8)
    reader.overlap(tqc)
    assert (tqc.is_planned, tqc.is_settled, reader.is_planned, reader.is_settled) == (True, False, True, False)
    tqc.set_params(0.5, 0)
    assert tqc.state is S.ACTIVATED and tqc.is_settled and reader.is_settled and reader.state is S.OVERLAPPED
    tqc.bake()
    assert tqc.state is S.BAKED and tqc.is_baked and reader.is_baked and tqc.is_settled
    with pytest.raises(ValueError, match="baked config cannot be baked"):
        tqc.bake()
    tqc.keep_float("kept float by a test")
    assert tqc.state is S.FP32 and tqc.notes["reason"] == "kept float by a test"
    assert not tqc.is_planned and not reader.is_planned and not reader.is_settled  # its dominator is float


def test_passive_configs_bake_to_passive_baked():
    bias = TensorQuantizationConfig(QuantScheme.integer(32), S.PASSIVE_INIT, role="bias")
    assert bias.is_planned and not bias.is_settled
    bias.make_passive(lambda: (np.float32(0.01), np.int32(0)))
    bias.bake()
    assert bias.state is S.PASSIVE_BAKED and float(bias.scale) == pytest.approx(0.01)


def test_state_cannot_be_assigned():
    with pytest.raises(AttributeError):
        TensorQuantizationConfig(INT8).state = S.FP32


def test_no_state_assignment_outside_the_plan_module():
    assigning = re.compile(r"\.state\s*=(?!=)")
    offenders = [f"{path.relative_to(ROOT)}:{number}" for folder in ("core", "plugins", "contrib", "tests", "bench")
                 for path in (ROOT / folder).rglob("*.py") if path != PLAN_MODULE and path != Path(__file__)
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if assigning.search(line)]
    assert offenders == []


def _graph_with_two_reader_grids():
    """The small model by hand; ``add`` reads ``relu_out`` on its own grid, so the tensor needs two pairs."""
    graph = quantize_by_hand(from_model_proto(small_model_proto()))
    add = graph.operations["add"]
    add.quant.inputs[0].set_params(np.float32(0.37), np.int32(3))
    return graph


def test_sites_place_every_quantized_reader_once():
    graph = _graph_with_two_reader_grids()
    found = list(sites(graph))
    pairs = Counter((s.tensor.name, s.kind) for s in found)
    assert pairs[("relu_out", "producer")] == 1 and pairs[("relu_out", "reader")] == 1
    add = graph.operations["add"]
    (extra,) = [s for s in found if s.tensor.name == "relu_out" and s.kind == "reader"]
    assert extra == Site("reader", graph.variables["relu_out"], add.quant.inputs[0], ((add, 0),))
    quantized_readers = [(op.name, i) for op in graph.operations.values() if op.quant is not None
                         for i, t in enumerate(op.quant.inputs) if t is not None and t.is_settled]
    placed = [(op.name, i) for s in found for op, i in s.readers]
    assert set(quantized_readers) <= set(placed) and len(placed) == len(set(placed))
    assert ("pool", 0) in placed  # a float reader of a quantized output reads its producer's pair
    params = [s for s in found if s.kind == "parameter"]
    assert {s.tensor.name for s in params} == {"conv1.weight", "conv2.weight", "fc.weight"}
    kinds = [s.kind for s in found]
    assert kinds == sorted(kinds, key=lambda k: k != "parameter")  # parameters first


def test_the_onnxruntime_export_writes_one_pair_per_activation_site(tmp_path):
    graph = _graph_with_two_reader_grids()
    activation_sites = [s for s in sites(graph) if s.kind != "parameter"]
    (path,) = get_platform("onnxruntime").export(graph, tmp_path / "model.onnx", ExportOptions())
    model = onnx.load(path)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantizers) == len(activation_sites)
    add = next(n for n in model.graph.node if n.name == "add")
    dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    scale = next(t for t in model.graph.initializer if t.name == dequantized[add.input[0]].input[1])
    assert onnx.numpy_helper.to_array(scale) == np.float32(0.37)
