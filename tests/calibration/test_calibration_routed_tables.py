"""A mixture of experts' routed weights: Gather(table, expert ids) of a constant table of rank >= 3 feeding a MatMul
takes its range from the whole table, not from the experts the calibration data happened to route to."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.calibration import driver

D, F, E = 16, 24, 4


def _moe(gather: str = "Gather") -> tuple:
    """tokens x [n, D] and expert ids [n]: y [n, 1, F] = x @ table[ids]; expert 3's weights are 6x the others'."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((E, D, F)).astype(np.float32) / D ** 0.5
    table[3] *= 6
    if gather == "Gather":
        pick = helper.make_node("Gather", ["table", "ids"], ["w"], axis=0, name="pick")
        ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])
    else:  # GatherND of ids [n, 1]
        pick = helper.make_node("GatherND", ["table", "ids"], ["w"], name="pick")
        ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 1])
    nodes = [pick, helper.make_node("Unsqueeze", ["x", "one"], ["xu"], name="unsq"),
             helper.make_node("MatMul", ["xu", "w"], ["y"], name="mm")]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D]), ids],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, F])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), table


def _feeds(rng, expert_ids, scale, nd: bool) -> dict:
    ids = np.asarray(expert_ids, np.int64)
    return {"x": (rng.standard_normal((len(ids), D)) * scale).astype(np.float32),
            "ids": ids[:, None] if nd else ids}


def _data(nd: bool = False) -> tuple[list, list]:
    """Calibration routes to experts 0-2 only; held-out feeds route every token to expert 3 (its inputs 6x smaller:
    the product's range is the one calibration saw)."""
    rng = np.random.default_rng(1)
    calib = [_feeds(rng, rng.integers(0, 3, 32), 1.0, nd) for _ in range(8)]
    held = [_feeds(rng, np.full(32, 3), 1 / 6, nd) for _ in range(4)]
    return calib, held


def _sqnr(model, path, feeds) -> float:
    float_run = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    quant_run = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.concatenate([float_run.run(None, f)[0].ravel() for f in feeds])
    got = np.concatenate([quant_run.run(None, f)[0].ravel() for f in feeds])
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)))


def _range(tqc) -> tuple[float, float]:
    scale, offset = float(np.ravel(tqc.scale)[0]), float(np.ravel(tqc.offset)[0])
    return (tqc.scheme.quant_min - offset) * scale, (tqc.scheme.quant_max - offset) * scale


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
@pytest.mark.parametrize("gather", ["Gather", "GatherND"])
def test_a_routed_gather_of_a_rank3_table_is_ranged_on_every_expert(tmp_path, engine, gather):
    model, table = _moe(gather)
    calib, held = _data(nd=gather == "GatherND")
    result = qtool.quantize(model, "onnxruntime", calib, calib_layout="feeds", output=tmp_path / "q.onnx",
                            config={"calibration": {"engine": engine}})
    run = next(r for r in result.pass_runs if r.name == "RuntimeCalibration")
    assert run.details["engine"] == engine
    assert run.details["tables"] == [{"tensor": "w", "op": "mm", "table": "table"}]
    gathered = result.graph.operations["mm"].quant.inputs[1]
    low, high = _range(gathered)
    # expert 3, never routed to, is covered (the auto observer may trim the table's outermost tails; the routed
    # experts alone reach a sixth of it)
    assert low <= 0.9 * table[3].min() and high >= 0.9 * table[3].max()
    assert _sqnr(model, tmp_path / "q.onnx", held) > 22  # 26 dB


def test_calibrated_on_the_routed_rows_alone_the_rare_expert_is_clipped(tmp_path, monkeypatch):
    """The threshold above tells the rule from the old behaviour: ranged on the data's experts, the held-out
    expert's weights clip (4.5 dB)."""
    model, table = _moe()
    calib, held = _data()
    monkeypatch.setattr(driver, "routed_table", lambda var: None)
    result = qtool.quantize(model, "onnxruntime", calib, calib_layout="feeds", output=tmp_path / "q.onnx")
    assert not next(r for r in result.pass_runs if r.name == "RuntimeCalibration").details["tables"]
    low, high = _range(result.graph.operations["mm"].quant.inputs[1])
    assert high < 0.5 * table[3].max()
    assert _sqnr(model, tmp_path / "q.onnx", held) < 15


def test_an_embedding_table_of_rank_2_stays_data_calibrated():
    """A rank-2 table (an embedding) is not routed weights: its rows are activations ranged on the data."""
    from qtool.ir import from_model_proto

    table = np.ones((10, 4), np.float32)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0, name="pick"),
             helper.make_node("Transpose", ["table3"], ["t3"], perm=[0, 2, 1], name="tr")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("t3", TensorProto.FLOAT, [2, 4, 3])],
                              [numpy_helper.from_array(table, "emb"),
                               numpy_helper.from_array(np.ones((2, 3, 4), np.float32), "table3")])
    ir = from_model_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert driver.routed_table(ir.variables["e"]) is None
    assert driver.routed_table(ir.variables["t3"]) is None  # a Transpose of a table is no gathered row


def test_moving_ops_after_the_gather_keep_the_table():
    """Transpose/Reshape/... between the Gather and its reader move the routed rows, computing nothing."""
    from qtool.ir import from_model_proto

    model, _ = _moe()
    graph = model.graph
    graph.node[0].output[0] = "w0"
    graph.node.insert(1, helper.make_node("Transpose", ["w0"], ["w"], perm=[0, 1, 2], name="tr"))
    ir = from_model_proto(model)
    assert driver.routed_table(ir.variables["w"]).name == "table"
