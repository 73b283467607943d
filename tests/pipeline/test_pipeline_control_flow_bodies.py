"""Compute ops inside If, Loop and Scan bodies quantized with defaults: calibrated on what each body sees (the
branch taken, every iteration, every step), exported with Q/DQ inside the bodies, run by onnxruntime and within
one step of qtool's simulation; a branch never taken stays float with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.control_flow.feeds import record_bodies
from qtool.ir import from_model_proto

FEATURES, HIDDEN, OUT, TRIPS = 6, 8, 4, 3
_rng = np.random.default_rng(0)
WEIGHTS = {name: (_rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
           for name, shape in (("w1", (FEATURES, HIDDEN)), ("w2", (HIDDEN, OUT)), ("w_then", (HIDDEN, HIDDEN)),
                               ("w_body", (HIDDEN, HIDDEN)))}
W_INNER = (_rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)


def _vi(name, shape=None, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _if():
    """Branches on the sign of h's mean: then MatMul(h, w_then) (an outer weight), else MatMul(Relu(h), w_else)
    (the branch's own initializer)."""
    then = helper.make_graph([helper.make_node("MatMul", ["h", "w_then"], ["then_out"], "then_mm")], "then", [],
                             [_vi("then_out")])
    other = helper.make_graph([helper.make_node("Relu", ["h"], ["r"]),
                               helper.make_node("MatMul", ["r", "w_else"], ["else_out"], "else_mm")], "else", [],
                              [_vi("else_out")], [numpy_helper.from_array(W_INNER, "w_else")])
    return [helper.make_node("ReduceMean", ["h"], ["mean"], "mean", keepdims=0),
            helper.make_node("Greater", ["mean", "zero"], ["positive"], "positive"),
            helper.make_node("If", ["positive"], ["flowed"], "flow", then_branch=then, else_branch=other)]


def _loop():
    """TRIPS times v = Tanh(MatMul(v, w_body))."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["v_in", "w_body"], ["m"], "body_mm"), helper.make_node("Tanh", ["m"], ["v_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in")],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out")])
    return [helper.make_node("Loop", ["trips", "", "h"], ["flowed"], "flow", body=body)]


def _scan():
    """An RNN over the rows of h: acc = Tanh(MatMul(acc, w_body) + row), every acc scanned out."""
    body = helper.make_graph([helper.make_node("MatMul", ["acc_in", "w_body"], ["m"], "body_mm"),
                              helper.make_node("Add", ["m", "row"], ["s"]),
                              helper.make_node("Tanh", ["s"], ["acc_out"]),
                              helper.make_node("Identity", ["acc_out"], ["scanned"])],
                             "scan_body", [_vi("acc_in", [HIDDEN]), _vi("row", [HIDDEN])],
                             [_vi("acc_out", [HIDDEN]), _vi("scanned", [HIDDEN])])
    return [helper.make_node("Scan", ["zeros", "h"], ["acc", "flowed"], "flow", body=body, num_scan_inputs=1)]


def model(kind: str) -> onnx.ModelProto:
    """x -> MatMul w1 -> (If | Loop | Scan, a MatMul in each body) -> MatMul w2 -> y."""
    inits = [numpy_helper.from_array(v, k) for k, v in WEIGHTS.items()]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(TRIPS, np.int64), "trips"),
              numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "zeros")]
    flow = {"if": _if, "loop": _loop, "scan": _scan}[kind]()
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "dense1"), *flow,
             helper.make_node("MatMul", ["flowed", "w2"], ["y"], "dense2")]
    graph = helper.make_graph(nodes, kind, [_vi("x", ["batch", FEATURES])], [_vi("y", ["batch", OUT])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _x(count, seed=1, offset=0.0):
    return (np.random.default_rng(seed).standard_normal((count, FEATURES)) + offset).astype(np.float32)


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _bodies(path):
    """name of each body MatMul in the export -> the op types producing its two inputs (inside its body)."""
    found = {}
    for node in onnx.load(str(path)).graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                producers = {o: n.op_type for n in attr.g.node for o in n.output}
                found.update({n.name.split(".")[-1]: [producers.get(i) for i in n.input]
                              for n in attr.g.node if n.op_type == "MatMul"})
    return found


def _quantize(tmp_path, kind, calib):
    path, output = tmp_path / f"{kind}.onnx", tmp_path / f"{kind}_q.onnx"
    onnx.save(model(kind), path)
    feeds = [{"x": calib[k:k + 4]} for k in range(0, len(calib), 4)]  # the If decides per call (a batch of 4)
    return path, output, qtool.quantize(path, "onnxruntime", feeds, calib_layout="feeds", output=output,
                                        check_agreement=True)


def _assert_agrees(agreement: dict) -> None:
    """Simulation vs ORT on every output: quantized ones within a step, float ones (a MatMul's float output,
    MatMulIntegerToFloat in ORT) to float rounding."""
    assert agreement["outputs"]
    for name, compared in agreement["outputs"].items():
        assert compared.get("max_steps", 0) <= 1 and compared.get("max_relative", 0) < 1e-4, (name, compared)


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_body_compute_quantized_and_run_by_onnxruntime(tmp_path, kind):
    calib = np.concatenate([_x(16, seed=3, offset=2.0), _x(16, seed=5, offset=-2.0)])  # both If branches taken
    path, output, result = _quantize(tmp_path, kind, calib)
    inside = _bodies(output)
    expected = {"if": {"then_mm", "else_mm"}}.get(kind, {"body_mm"})
    assert set(inside) == expected
    assert all(producers == ["DequantizeLinear", "DequantizeLinear"] for producers in inside.values()), inside
    bodies = result.summary["subgraphs"]
    assert all(b["compute_ops"] == b["quantized"] == 1 and b["reason"] is None for b in bodies)
    for body in bodies:  # each body's simulation vs ORT
        _assert_agrees(body["agreement"])
    _assert_agrees(result.agreement)  # the whole model, bodies run by ORT in both
    flow = result.graph.operations["flow"]
    assert not flow.quant.quantized and "compute ops quantized" in flow.quant.reason
    x = _x(8, seed=4, offset=2.0)  # as calibrated
    reference, quantized = _ort(path, x), _ort(output, x)
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2))
    assert 20 < snr_db < 80, snr_db  # close to float, and not float


def test_a_branch_never_taken_stays_float_with_its_reason(tmp_path):
    positive = 12.0 * np.sign(WEIGHTS["w1"].sum())  # every call's h has a positive mean: then_branch only
    _, output, result = _quantize(tmp_path, "if", _x(32, seed=3, offset=positive))
    inside = _bodies(output)
    assert inside["then_mm"] == ["DequantizeLinear", "DequantizeLinear"]
    assert inside["else_mm"] == ["Relu", None]  # float: the Relu output and its own float initializer
    reason = result.graph.operations["flow"].quant.reason
    assert "else_branch never run during calibration: kept float" in reason
    assert "then_branch 1/1 compute ops quantized" in reason
    x = _x(4, seed=9, offset=-positive)  # ORT still runs the float branch (outside the calibrated range: no accuracy)
    assert np.isfinite(_ort(output, x)).all() and _ort(output, x).shape == (4, OUT)


def test_a_loop_inside_a_branch_is_quantized_too(tmp_path):
    """If whose then_branch holds the Loop of _loop(): the branch is quantized as a model of its own, which
    quantizes its Loop's body in turn."""
    loop = _loop()[0]
    loop.output[0] = "then_out"
    then = helper.make_graph([loop], "then", [], [_vi("then_out")])
    other = helper.make_graph([helper.make_node("Relu", ["h"], ["else_out"])], "else", [], [_vi("else_out")])
    nested = model("if")
    flow = next(n for n in nested.graph.node if n.op_type == "If")
    del flow.attribute[:]
    flow.attribute.extend([helper.make_attribute("then_branch", then), helper.make_attribute("else_branch", other)])
    path, output = tmp_path / "nested.onnx", tmp_path / "nested_q.onnx"
    onnx.save(nested, path)
    positive = 12.0 * np.sign(WEIGHTS["w1"].sum())
    calib = _x(16, seed=3, offset=positive)
    result = qtool.quantize(path, "onnxruntime", [{"x": calib[k:k + 4]} for k in range(0, 16, 4)],
                            calib_layout="feeds", output=output, check_agreement=True)
    then_outcome = next(b for b in result.summary["subgraphs"] if b["attribute"] == "then_branch")
    assert then_outcome["compute_ops"] == then_outcome["quantized"] == 1  # the Loop body's MatMul
    loop_node = next(n for n in next(a.g for n in onnx.load(output).graph.node for a in n.attribute
                                     if a.name == "then_branch").node if n.op_type == "Loop")
    body = loop_node.attribute[0].g
    producers = {o: n.op_type for n in body.node for o in n.output}
    assert [producers.get(i) for n in body.node if n.op_type == "MatMul" for i in n.input] == ["DequantizeLinear"] * 2
    _assert_agrees(result.agreement)
    x = _x(8, seed=4, offset=positive)
    reference, quantized = _ort(path, x), _ort(output, x)
    # a MatMul and a Tanh output rounded in each Loop iteration, then the If's: about 20 dB (float: > 80)
    assert 15 < 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2)) < 80


def test_feeds_kept_stay_few_and_evenly_spread(monkeypatch):
    monkeypatch.setattr("qtool.control_flow.feeds.MAX_FEEDS", 4)
    graph = from_model_proto(model("scan"))
    recorder = record_bodies(graph, [graph.operations["flow"]], [{"x": _x(11, seed=2)}])["flow"]
    h = _x(11, seed=2) @ WEIGHTS["w1"]
    assert recorder.calls["body"] == 11
    kept = [next(t for t in range(11) if np.allclose(feed["row"], h[t], atol=1e-5)) for feed in recorder.feeds["body"]]
    assert kept == [0, 4, 8]  # 0..4 kept, thinned to every other (0, 2, 4), then 6 and 8, thinned again


@pytest.mark.parametrize(("kind", "calls"), [("loop", TRIPS), ("scan", 4)])
def test_observers_see_every_iteration(kind, calls):
    """The loop body is fed TRIPS times per call, the scan body once per row; each feed carries the state the
    previous iteration left."""
    graph = from_model_proto(model(kind))
    x = _x(4, seed=2)
    recorded = record_bodies(graph, [graph.operations["flow"]], [{"x": x}])["flow"].feeds["body"]
    assert len(recorded) == calls
    h = x @ WEIGHTS["w1"]
    if kind == "loop":
        v = h
        for i, feed in enumerate(recorded):
            assert int(feed["i"]) == i
            np.testing.assert_allclose(feed["v_in"], v, rtol=1e-5, atol=1e-6)
            v = np.tanh(v @ WEIGHTS["w_body"])
    else:
        acc = np.zeros(HIDDEN, np.float32)
        for row, feed in zip(h, recorded, strict=True):
            np.testing.assert_allclose(feed["row"], row, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(feed["acc_in"], acc, rtol=1e-5, atol=1e-6)
            acc = np.tanh(acc @ WEIGHTS["w_body"] + row)
