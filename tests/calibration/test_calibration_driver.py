"""calibrate(): float run with hooks, one observer per root activation config, warnings in the stats."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper
from qtool.calibration import CalibrationError, calibrate, load_calibration_data
from qtool.quant import QuantizationState, QuantScheme, TensorQuantizationConfig, compute_scale_offset

UINT8 = QuantScheme.integer(8, signed=False, symmetric=False)


def test_minmax_scales_match_onnxruntime(cnn, cnn_path, cnn_samples, attach, ort_activations):
    configs = attach(cnn, UINT8)
    stats = calibrate(cnn, load_calibration_data(cnn_samples, cnn, batch_size=6), progress=False)
    reference = ort_activations(cnn_path, cnn_samples, list(configs))
    assert stats["samples"] == 20 and stats["batches"] == 4
    assert stats["tensors"] == len(configs) and stats["observers"] == {"minmax": len(configs)}
    for name, tqc in configs.items():
        values = reference.get(name, cnn_samples if name == "x" else None)
        scale, offset = compute_scale_offset(UINT8, values.min(), values.max())
        assert tqc.state is QuantizationState.ACTIVATED, name
        np.testing.assert_allclose(tqc.scale, scale, rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(tqc.offset, offset, err_msg=name)


def test_every_reader_config_is_set_and_only_roots_are_touched(cnn, cnn_samples, attach):
    attach(cnn, UINT8)
    conv2 = next(op for op in cnn.operations.values() if op.op_type == "Conv" and op.inputs[0].producer)
    relu1 = conv2.inputs[0].producer
    overlapped = conv2.quant.inputs[0]
    overlapped.overlap(relu1.quant.outputs[0])
    passive = TensorQuantizationConfig(UINT8)
    passive.make_passive(lambda: (np.float32(1.0), np.int32(0)))
    dynamic = TensorQuantizationConfig(QuantScheme.integer(8, dynamic=True))
    weight = TensorQuantizationConfig(QuantScheme.integer(8), role="weight")
    conv2.quant.inputs[1:] = [weight, passive]
    head = next(op for op in cnn.operations.values() if op.op_type == "Gemm")
    head.quant.outputs[0] = dynamic

    calibrate(cnn, cnn_samples, progress=False)

    assert overlapped.state is QuantizationState.OVERLAPPED and overlapped.scale == relu1.quant.outputs[0].scale
    assert passive.state is QuantizationState.PASSIVE
    assert dynamic.state is weight.state is QuantizationState.INITIAL
    roots = [t for op in cnn.operations.values() for t in op.quant.all_configs() if t.role == "activation"
             and t.dominator is t and t not in (passive, dynamic)]
    assert roots and all(t.state is QuantizationState.ACTIVATED for t in roots)


def test_options_reach_the_histogram_observers(cnn, cnn_samples, attach):
    configs = attach(cnn, UINT8.with_changes(observer="percentile"))
    stats = calibrate(cnn, cnn_samples, progress=False, options={"bins": 256, "percentile": 90.0})
    assert stats["observers"] == {"percentile": len(configs)}
    assert all(t.state is QuantizationState.ACTIVATED for t in configs.values())
    clipped = {name: float(t.scale) for name, t in configs.items()}
    minmax = attach(cnn, UINT8)
    calibrate(cnn, cnn_samples, progress=False)
    assert all(clipped[name] <= float(minmax[name].scale) * (1 + 1e-6) for name in clipped)
    assert all(clipped[name] < 0.9 * float(minmax[name].scale) for name in ("x", "logits"))


def _masked_scores_model(path) -> str:
    """scores + mask, then Softmax: the mask input holds -1e9 where attention is not allowed."""
    nodes = [helper.make_node("Add", ["scores", "mask"], ["masked"], name="add_mask"),
             helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "attention", [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 8, 8]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_a_mask_dominated_range_is_reported_by_tensor(tmp_path, attach):
    graph = qtool.load(_masked_scores_model(tmp_path / "attention.onnx"))
    attach(graph, QuantScheme.integer(8))
    rng = np.random.default_rng(0)
    mask = np.where(np.tril(np.ones((8, 8))) > 0, 0.0, -1e9).astype(np.float32)
    data = {"scores": rng.normal(size=(16, 8, 8)).astype(np.float32), "mask": np.broadcast_to(mask, (16, 8, 8))}
    stats = calibrate(graph, data, progress=False)
    flagged = {w["tensor"] for w in stats["warnings"]}
    assert flagged == {"masked"}, stats["warnings"]
    assert "quantize to zero" in stats["warnings"][0]["message"]


def test_a_tensor_never_finite_is_an_error_naming_it(tmp_path, attach):
    nodes = [helper.make_node("Log", ["x"], ["y"], name="log")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "log.onnx")
    g = qtool.load(tmp_path / "log.onnx")
    attach(g, UINT8)
    with pytest.raises(CalibrationError, match="tensor 'y'"):
        calibrate(g, np.full((3, 4), -1.0, dtype=np.float32), progress=False)


def test_a_graph_without_configs_runs_nothing(cnn, cnn_samples):
    stats = calibrate(cnn, cnn_samples, progress=False)
    assert stats["tensors"] == 0 and stats["samples"] == 0


def test_an_unsupported_scheme_observer_pair_names_the_tensor(cnn, cnn_samples, attach):
    attach(cnn, QuantScheme.floating(4, 3, observer="kl"))
    with pytest.raises(CalibrationError, match="tensor 'x' at op"):
        calibrate(cnn, cnn_samples, progress=False)


def test_a_dead_branch_is_still_run_and_calibrated(tmp_path, attach):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="used"),
             helper.make_node("Neg", ["x"], ["dead"], name="dangling")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dead.onnx")
    g = qtool.load(tmp_path / "dead.onnx")
    configs = attach(g, QuantScheme.integer(8))
    calibrate(g, np.arange(8, dtype=np.float32).reshape(2, 4), progress=False)
    np.testing.assert_allclose(configs["dead"].scale, 7 / 127, rtol=1e-6)


def test_the_progress_bar_shows_only_on_a_terminal(cnn, cnn_samples, attach, capsys, monkeypatch):
    def shown(progress: bool) -> str:
        attach(cnn, UINT8)  # fresh INITIAL configs: calibrated ones are left alone
        calibrate(cnn, cnn_samples, progress=progress)
        return capsys.readouterr().err

    assert shown(True) == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    assert "calibrating" in shown(True) and "20/20" in shown(True)
    assert shown(False) == ""


def test_batches_of_samples_are_cut_where_a_tap_wants_its_first_samples_to_end(cnn):
    """12 samples in batches of 5, a tap wanting its first 7 whole: batches of 5, 2, 3 and 2 samples, in order."""
    from qtool.calibration.driver import _cut

    rows = np.arange(12, dtype=np.float32)[:, None, None, None] * np.ones((1, 3, 12, 12), np.float32)
    data = load_calibration_data({"x": rows}, cnn, batch_size=5)
    batches = list(_cut(data, [7]))
    assert [len(batch["x"]) for batch in batches] == [5, 2, 3, 2]
    np.testing.assert_array_equal(np.concatenate([batch["x"] for batch in batches]), rows)
    assert [len(batch["x"]) for batch in _cut(data, [])] == [5, 5, 2]


@pytest.mark.parametrize("masked", [-np.inf, np.finfo(np.float32).min], ids=["inf", "float32-lowest"])
def test_a_tensor_holding_a_mask_stays_float_and_leaves_the_scores_their_scale(masked, tmp_path):
    """An additive attention mask of -inf (its finite values all 0: scale 1, the placeholder of an empty range) or of
    float32's lowest value, added to the scores on a platform that aligns an Add's inputs to the widest range: the
    scores took the mask's range and quantized to 0, and the masked positions came back as ordinary values (a GPT-2
    on tensorrt: 9.4 dB; 27.7 dB now)."""
    graph = qtool.load(_masked_scores_model(tmp_path / "attention.onnx"))
    rng = np.random.default_rng(0)
    mask = np.where(np.tril(np.ones((8, 8))) > 0, 0.0, masked).astype(np.float32)
    data = {"scores": rng.normal(size=(16, 8, 8)).astype(np.float32), "mask": np.broadcast_to(mask, (16, 8, 8))}
    config = {"dispatch": {"quantize_op_types": ["Add"]}, "alignment": {"add": "max"}}
    result = qtool.quantize(graph, "tensorrt", data, config=config)
    add = result.graph.operations["add_mask"]
    scores, mask_config = add.quant.inputs
    assert not mask_config.is_planned and not add.quant.outputs[0].is_planned
    assert mask_config.notes["reason"].startswith("kept float by calibration: it holds")
    assert float(scores.scale) < 0.05  # the scores' own range (about +-3), not the mask's
    assert result.summary["float_vs_quantized"]["outputs"]["probs"]["sqnr_db"] > 30


def test_a_tensor_whose_first_reader_shares_a_later_readers_parameters_is_calibrated(tmp_path):
    """A DeBERTa-v2 (dynamo) layout: q, written float, is read by two MatMuls, and the first in topological order
    shares the parameters of the second's config. Calibration looked at one place per tensor and parameters,
    found the sharing config there, and left the owner without an observer ("tensor 'q' at op 'bmm' was not
    calibrated")."""
    from onnx import numpy_helper
    from qtool.ir import from_model_proto

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Add", ["x", "b"], ["lin"], name="q_add"),  # float: q has no quantized producer
             helper.make_node("Reshape", ["lin", "s3"], ["q"], name="view"),
             helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1], name="trq"),
             helper.make_node("Div", ["qt", "sqrt"], ["qts"], name="div"),
             helper.make_node("MatMul", ["q", "qts"], ["s1"], name="bmm"),
             helper.make_node("Tile", ["C", "reps"], ["tiled"], name="tile"),
             helper.make_node("Transpose", ["tiled"], ["pk"], perm=[0, 2, 1], name="tr"),
             helper.make_node("MatMul", ["q", "pk"], ["s2"], name="bmm_1"),
             helper.make_node("ReduceSum", ["s1", "ax"], ["r1"], name="rs1"),
             helper.make_node("ReduceSum", ["s2", "ax"], ["r2"], name="rs2"),
             helper.make_node("Add", ["r1", "r2"], ["y"], name="add")]
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("b", rng.standard_normal(16).astype(np.float32)), ("sqrt", np.array(2.0, np.float32)),
        ("C", rng.standard_normal((2, 24, 8)).astype(np.float32)), ("reps", np.array([1, 1, 1], np.int64)),
        ("ax", np.array([-1], np.int64)), ("s3", np.array([2, -1, 8], np.int64)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "l", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "l", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    order = [op.name for op in from_model_proto(model).topological_order()]
    assert order.index("bmm_1") < order.index("bmm")  # the layout that hid the owner
    feeds = [{"x": rng.standard_normal((1, 12, 16)).astype(np.float32)} for _ in range(8)]
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")
    assert result.summary["coverage"]["compute_ops_quantized"] == 2
