"""Compute ops inside If, Loop and Scan bodies quantized with defaults: calibrated on what each body sees (the
branch taken, every iteration, every step), exported with Q/DQ inside the bodies, run by onnxruntime and within
one step of qtool's simulation; a branch never taken stays float with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import helper
from qtool.control_flow.feeds import BodyRecorder, record_bodies
from qtool.ir import from_model_proto
from qtool.testing.control_flow import FEATURES, HIDDEN, OUT, TRIPS, WEIGHTS, control_flow_model, loop_nodes
from qtool.testing.control_flow import value_info as _vi


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
    onnx.save(control_flow_model(kind), path)
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
    main = sum(op.op_type == "MatMul" for op in result.graph.operations.values())
    # the summary's coverage counts the bodies' compute ops too (an optimum merged decoder: all inside an If)
    assert result.summary["coverage"]["compute_ops"] == result.summary["coverage"]["compute_ops_quantized"] \
        == main + len(bodies)
    for body in bodies:  # each body's simulation vs ORT
        _assert_agrees(body["agreement"])
    _assert_agrees(result.agreement)  # the whole model, bodies run by ORT in both
    flow = result.graph.operations["flow"]
    assert not flow.quant.quantized and "compute ops quantized" in flow.quant.reason
    x = _x(8, seed=4, offset=2.0)  # as calibrated
    reference, quantized = _ort(path, x), _ort(output, x)
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2))
    assert 20 < snr_db < 80, snr_db  # close to float, and not float


def test_only_the_whole_model_is_measured_against_float(tmp_path, monkeypatch):
    """A body's own quantize measures nothing against float (nothing reads it: the model's summary measures the
    model, bodies included), nor keeps float outputs for it."""
    import qtool.pipeline

    measured, kept = [], []
    real_measure, real_keep = qtool.pipeline._float_vs_quantized, qtool.pipeline._kept_outputs
    monkeypatch.setattr(qtool.pipeline, "_float_vs_quantized",
                        lambda result, *a, **k: measured.append(result.model) or real_measure(result, *a, **k))
    monkeypatch.setattr(qtool.pipeline, "_kept_outputs", lambda *a: kept.append(a) or real_keep(*a))
    calib = np.concatenate([_x(16, seed=3, offset=2.0), _x(16, seed=5, offset=-2.0)])
    path, _, result = _quantize(tmp_path, "if", calib)
    assert len(result.summary["subgraphs"]) == 2 and measured == [str(path)] and len(kept) == 1
    assert result.summary["float_vs_quantized"]["outputs"]


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_the_float_reference_runs_the_float_bodies(tmp_path, kind):
    """The quantized bodies replace the op's attributes: every 'float' run then ran them with their Q/DQ, and the
    summary measured the written model against a partly quantized one (a Loop: 24.6 dB printed, 26.1 dB between
    the two files). The float reference keeps the float bodies: the summary's SQNR is that of the two files."""
    calib = np.concatenate([_x(16, seed=3, offset=2.0), _x(16, seed=5, offset=-2.0)])
    path, output, result = _quantize(tmp_path, kind, calib)
    feeds = [{"x": calib[k:k + 4]} for k in range(0, len(calib), 4)]
    measured = result.summary["float_vs_quantized"]
    reference = np.concatenate([_ort(path, f["x"]) for f in feeds[:measured["samples"]]])
    quantized = np.concatenate([_ort(output, f["x"]) for f in feeds[:measured["samples"]]])
    snr_db = 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((quantized - reference) ** 2.0))
    assert measured["outputs"]["y"]["sqnr_db"] == pytest.approx(snr_db, abs=0.01)
    original = onnx.load(str(path))
    bodies = {a.name: a.g for n in original.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH}
    float_flow = result.graph.float_reference.operations["flow"]
    assert all(float_flow.attributes[name] == body for name, body in bodies.items())


def test_a_branch_never_taken_stays_float_with_its_reason(tmp_path):
    positive = 12.0 * np.sign(WEIGHTS["w1"].sum())  # every call's h has a positive mean: then_branch only
    _, output, result = _quantize(tmp_path, "if", _x(32, seed=3, offset=positive))
    inside = _bodies(output)
    assert inside["then_mm"] == ["DequantizeLinear", "DequantizeLinear"]
    assert inside["else_mm"] == ["Relu", None]  # float: the Relu output and its own float initializer
    reason = result.graph.operations["flow"].quant.reason
    assert "else_branch never run during calibration: kept float" in reason
    assert "then_branch 1/1 compute ops quantized" in reason
    covered = result.summary["coverage"]
    assert covered["compute_ops"] - covered["compute_ops_quantized"] == 1
    assert covered["float_reasons"] == {"never run during calibration: kept float": 1}
    x = _x(4, seed=9, offset=-positive)  # ORT still runs the float branch (outside the calibrated range: no accuracy)
    assert np.isfinite(_ort(output, x)).all() and _ort(output, x).shape == (4, OUT)


_CANNOT_CARRY = "which a subgraph spliced into its op cannot carry"


@pytest.mark.parametrize(("platform", "why"), [
    ("tensorrt", f"tensorrt writes the quantization in files beside the model (body.ranges.json, "
                 f"body.calibration.cache), {_CANNOT_CARRY}"),
    ("aimet", f"aimet writes the quantization in files beside the model (body.encodings), {_CANNOT_CARRY}"),
    ("text", "text exports no ONNX model a subgraph can be made of (it writes body.txt)"),
])
def test_a_body_stays_float_where_the_platform_writes_its_quantization_beside_the_model(tmp_path, platform, why):
    """TensorRT's ranges and AIMET's encodings of a body were written to a temporary folder and dropped, the body
    spliced in float, while coverage read 'compute ops quantized' for it: the files held nothing of it."""
    path = tmp_path / "if.onnx"
    onnx.save(control_flow_model("if"), path)
    calib = np.concatenate([_x(16, seed=3, offset=2.0), _x(16, seed=5, offset=-2.0)])  # both branches taken
    feeds = [{"x": calib[k:k + 4]} for k in range(0, len(calib), 4)]
    result = qtool.quantize(path, platform, feeds, calib_layout="feeds", output=tmp_path / "q.onnx")
    reasons = [b["reason"] for b in result.summary["subgraphs"]]
    assert reasons == [f"kept float: {why}"] * 2  # no failure: what the platform's files cannot carry
    covered = result.summary["coverage"]
    assert covered["compute_ops"] - covered["compute_ops_quantized"] == 2
    assert sum(d.code == "control-flow.body-float" for d in result.diagnostics) == 2


def test_each_body_says_how_many_calls_it_was_calibrated_on(tmp_path):
    """A merged decoder's If (Optimum's use_cache_branch) takes its no-past branch once per sequence: that body is
    calibrated on a call or two, and on held-out steps came out 17 dB below the with-past one (20 against 37 dB)
    with nothing said. The reason and the summary give each body's calls."""
    positive = 12.0 * np.sign(WEIGHTS["w1"].sum())
    calib = np.concatenate([_x(28, seed=3, offset=positive), _x(4, seed=5, offset=-positive)])  # 7 calls, then 1
    _, _, result = _quantize(tmp_path, "if", calib)
    reason = result.graph.operations["flow"].quant.reason
    assert "then_branch 1/1 compute ops quantized, calibrated on 7 calls" in reason
    assert "else_branch 1/1 compute ops quantized, calibrated on 1 call;" in reason + ";"
    assert {b["attribute"]: b["calls"] for b in result.summary["subgraphs"]} == {"then_branch": 7, "else_branch": 1}


def test_a_loop_inside_a_branch_is_quantized_too(tmp_path):
    """If whose then_branch holds the Loop of _loop(): the branch is quantized as a model of its own, which
    quantizes its Loop's body in turn."""
    loop = loop_nodes()[0]
    loop.output[0] = "then_out"
    then = helper.make_graph([loop], "then", [], [_vi("then_out")])
    other = helper.make_graph([helper.make_node("Relu", ["h"], ["else_out"])], "else", [], [_vi("else_out")])
    nested = control_flow_model("if")
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


def test_a_loop_body_reading_its_iteration_number_as_a_1d_tensor_is_quantized(tmp_path):
    """tf2onnx declares a Loop body's iteration number [1] and slices with it (Slice's starts must be 1-D):
    ONNX Runtime feeds it in the rank the body declares, and so must the body's calibration runs (fed as a
    scalar, the recording ended in ONNX Runtime's 'Starts must be a 1-D array' traceback)."""
    from onnx import TensorProto, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["i", "one"], ["next"]),
         helper.make_node("Slice", ["shifts", "i", "next"], ["shift"]),
         helper.make_node("MatMul", ["v_in", "w_body"], ["m"], "body_mm"),
         helper.make_node("Add", ["m", "shift"], ["s"]), helper.make_node("Tanh", ["s"], ["v_out"])],
        "body", [_vi("i", [1], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in")],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out")])
    model = control_flow_model("loop")
    next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g.CopyFrom(body)
    shifts = np.random.default_rng(7).standard_normal((TRIPS, HIDDEN)).astype(np.float32)
    model.graph.initializer.extend([numpy_helper.from_array(shifts, "shifts"),
                                    numpy_helper.from_array(np.array([1], np.int64), "one")])
    path, output = tmp_path / "sliced.onnx", tmp_path / "sliced_q.onnx"
    onnx.save(model, path)
    calib = _x(16, seed=3)

    result = qtool.quantize(path, "onnxruntime", [{"x": calib[k:k + 4]} for k in range(0, 16, 4)],
                            calib_layout="feeds", output=output, check_agreement=True)

    (outcome,) = result.summary["subgraphs"]
    assert outcome["compute_ops"] == outcome["quantized"] == 1
    assert _bodies(output)["body_mm"] == ["DequantizeLinear", "DequantizeLinear"]
    _assert_agrees(result.agreement)


def test_feeds_kept_stay_few_and_evenly_spread(monkeypatch):
    monkeypatch.setattr("qtool.control_flow.feeds.MAX_FEEDS", 4)
    graph = from_model_proto(control_flow_model("scan"))
    recorder = record_bodies(graph, [graph.operations["flow"]], [{"x": _x(11, seed=2)}])["flow"]
    h = _x(11, seed=2) @ WEIGHTS["w1"]
    assert recorder.calls["body"] == 11
    kept = [next(t for t in range(11) if np.allclose(feed["row"], h[t], atol=1e-5)) for feed in recorder.feeds["body"]]
    assert kept == [0, 4, 8]  # 0..4 kept, thinned to every other (0, 2, 4), then 6 and 8, thinned again


@pytest.mark.parametrize(("kind", "calls"), [("loop", TRIPS), ("scan", 4)])
def test_observers_see_every_iteration(kind, calls):
    """The loop body is fed TRIPS times per call, the scan body once per row; each feed carries the state the
    previous iteration left."""
    graph = from_model_proto(control_flow_model(kind))
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


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_onnxruntime_records_the_feeds_the_executor_records(kind):
    """The main graph's float run that records the bodies' feeds: onnxruntime by default (no torch), the executor
    where onnxruntime cannot stand in for it; both record the same feeds."""
    from qtool.control_flow.feeds import _record_with_executor

    graph = from_model_proto(control_flow_model(kind))
    batches = [{"x": _x(4, seed=2, offset=2.0)}, {"x": _x(4, seed=3, offset=-2.0)}]
    by_onnxruntime = record_bodies(graph, [graph.operations["flow"]], batches)["flow"]
    by_executor = {"flow": BodyRecorder(graph, graph.operations["flow"])}
    _record_with_executor(graph, by_executor, batches, "cpu")
    assert by_onnxruntime.calls == by_executor["flow"].calls and sum(by_onnxruntime.calls.values()) >= 2
    for attribute, feeds in by_onnxruntime.feeds.items():
        theirs = by_executor["flow"].feeds[attribute]
        assert [sorted(feed) for feed in feeds] == [sorted(feed) for feed in theirs]
        for ours, executors in zip(feeds, theirs, strict=True):
            for name, value in ours.items():
                np.testing.assert_allclose(value, executors[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kind", ["if", "loop", "scan"])
def test_a_quantized_control_flow_model_fed_back_is_quantized_again(tmp_path, kind):
    """qtool's own output fed back: its main graph's Q/DQ pairs are removed and quantized again, and the bodies
    keep reading the outer tensors they read (a branch read the removed DequantizeLinear's output by its name:
    recording the bodies' feeds failed, KeyError 'a_dq', on the zoo's if-branches)."""
    calib = np.concatenate([_x(16, seed=3, offset=2.0), _x(16, seed=5, offset=-2.0)])
    path, output, _ = _quantize(tmp_path, kind, calib)
    feeds = [{"x": calib[k:k + 4]} for k in range(0, len(calib), 4)]
    again = qtool.quantize(output, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "again.onnx")
    assert [d.code for d in again.diagnostics if d.code == "model.prequantized"]
    x = _x(8, seed=4, offset=2.0)
    reference, quantized = _ort(path, x), _ort(again.files[0], x)
    assert 20 < 10 * np.log10(np.sum(reference**2) / np.sum((quantized - reference) ** 2)) < 80


def test_a_branch_of_constants_alone_has_nothing_to_quantize(tmp_path):
    """torchvision's batched_nms exports 'If boxes.numel() == 0' whose then_branch is one Constant (fasterrcnn:
    If_1971): taken during calibration (no box), it was quantized as a model of no input and the run warned
    'then_branch: kept float: quantizing it failed (the model has no inputs to calibrate with)'."""
    nested = control_flow_model("if")
    flow = next(n for n in nested.graph.node if n.op_type == "If")
    empty = helper.make_tensor("empty", onnx.TensorProto.FLOAT, [1, HIDDEN], np.zeros(HIDDEN, np.float32))
    then = helper.make_graph([helper.make_node("Constant", [], ["then_out"], value=empty)], "then", [],
                             [_vi("then_out")])
    next(a for a in flow.attribute if a.name == "then_branch").g.CopyFrom(then)
    path = tmp_path / "constant_branch.onnx"
    onnx.save(nested, path)
    positive = 12.0 * np.sign(WEIGHTS["w1"].sum())  # the then_branch only
    calib = _x(16, seed=3, offset=positive)
    result = qtool.quantize(path, "onnxruntime", [{"x": calib[k:k + 4]} for k in range(0, 16, 4)],
                            calib_layout="feeds", output=tmp_path / "q.onnx")
    assert not [d for d in result.diagnostics if d.code == "control-flow.body-float"]
    then_outcome = next(b for b in result.summary["subgraphs"] if b["attribute"] == "then_branch")
    assert then_outcome["compute_ops"] == 0
    assert then_outcome["reason"] == "reads no tensor (constants alone): nothing to quantize"
    assert "then_branch reads no tensor (constants alone): nothing to quantize" in \
        result.graph.operations["flow"].quant.reason
