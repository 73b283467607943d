"""The onnxruntime statistics engine gives the torch executor's calibration, and the executor runs where it must."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool import QtoolError
from qtool.calibration import CalibrationError, calibrate, load_calibration_data, ort_engine
from qtool.ir import from_model_proto
from qtool.passes.accuracy.running import ort_float_arrays
from qtool.quant import QuantScheme

UINT8 = QuantScheme.integer(8, signed=False, symmetric=False)
PER_CHANNEL = QuantScheme.integer(8, signed=True, symmetric=True, per_channel=True, channel_axis=1)


def _calibrated(path, samples, scheme, engine, *, batch_size=6, attach=None, device="cpu"):
    graph = qtool.load(path)
    configs = attach(graph, scheme)
    stats = calibrate(graph, load_calibration_data(samples, graph, batch_size=batch_size), progress=False,
                      engine=engine, device=device)
    return stats, {name: (np.asarray(t.scale), np.asarray(t.offset)) for name, t in configs.items()}


def _assert_same(ours, theirs, rtol):
    assert ours.keys() == theirs.keys()
    for name, (scale, offset) in theirs.items():
        np.testing.assert_allclose(ours[name][0], scale, rtol=rtol, err_msg=name)
        np.testing.assert_allclose(ours[name][1], offset, atol=1, err_msg=name)


@pytest.mark.parametrize("scheme",
                         [UINT8, UINT8.with_changes(observer="auto"), PER_CHANNEL.with_changes(observer="mse")],
                         ids=["minmax", "auto", "per-channel-mse"])
def test_onnxruntime_statistics_match_the_executors(cnn_path, cnn_samples, attach, scheme):
    ort_stats, ours = _calibrated(cnn_path, cnn_samples, scheme, "auto", attach=attach)
    torch_stats, theirs = _calibrated(cnn_path, cnn_samples, scheme, "torch", attach=attach)
    assert ort_stats["engine"] == "onnxruntime" and "engine_note" not in ort_stats
    assert torch_stats["engine"] == "torch"
    assert ort_stats["samples"] == torch_stats["samples"] == 20 and ort_stats["batches"] == 4
    assert "x" in ours  # the graph input, read at the first Conv's input, is fed from the batch itself
    # float rounding of two runtimes may move a value across a histogram bin edge: a bin in 4096 at most
    _assert_same(ours, theirs, rtol=1e-5 if scheme.observer == "minmax" else 1e-3)


@pytest.mark.parametrize("scheme, threads", [(UINT8, 3), (UINT8.with_changes(observer="auto"), 2)],
                         ids=["minmax", "auto"])
def test_onnxruntime_leaves_histogram_observers_a_thread(cnn_path, cnn_samples, attach, monkeypatch, scheme,
                                                         threads):
    """A histogram's count costs about what the model's run does: onnxruntime runs on one thread fewer while the
    observers take the last run in. Min/max costs little: onnxruntime takes every thread."""
    monkeypatch.setenv("QTOOL_NUM_THREADS", "3")
    stats, _ = _calibrated(cnn_path, cnn_samples, scheme, "onnxruntime", attach=attach)
    assert stats["threads"] == threads


def test_onnxruntime_workers_do_not_spin_on_the_observers_cores(cnn_path):
    run = ort_engine.OrtFloatRun(qtool.load(cnn_path), ["x"], threads=2)
    assert run.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_batches_run_in_pieces_under_a_budget_give_the_same_scales(cnn_path, cnn_samples, attach, monkeypatch):
    _, whole = _calibrated(cnn_path, cnn_samples, UINT8, "onnxruntime", attach=attach, batch_size=20)
    monkeypatch.setattr(ort_engine, "DEFAULT_BUDGET", 3000)  # less than one sample's tensors: groups of tensors
    stats, pieces = _calibrated(cnn_path, cnn_samples, UINT8, "onnxruntime", attach=attach, batch_size=20)
    assert stats["engine"] == "onnxruntime"
    _assert_same(pieces, whole, rtol=0)


def test_runs_stay_under_the_budget(cnn_path, cnn_samples):
    graph = qtool.load(cnn_path)
    tensors = [op.outputs[0].name for op in graph.topological_order()]
    run = ort_engine.OrtFloatRun(graph, [*tensors, "x"], budget=5000)
    seen: dict[str, int] = {}
    for piece in run.run({"x": cnn_samples}, splittable=True):
        computed = {name: a for name, a in piece.items() if name != "x"}
        assert sum(a.nbytes for a in computed.values()) <= 5000 or len(computed) == 1
        for name, array in piece.items():
            seen[name] = seen.get(name, 0) + len(array)
    assert run.rows == 1 and len(run.groups) > 1
    assert seen == {name: 20 for name in [*tensors, "x"]}  # every tensor of every sample, once


def _if_model(path):
    """y = Relu(x) then an If on a flag: its branches read y."""
    then = helper.make_graph([helper.make_node("Neg", ["y"], ["t"], name="neg")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Abs", ["y"], ["e"], name="abs")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("If", ["flag"], ["z"], name="branch", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _attach_relu(graph, scheme):
    from qtool.quant import OpQuantConfig, TensorQuantizationConfig

    relu = graph.operations["relu"]
    tqc = TensorQuantizationConfig(scheme)
    relu.quant = OpQuantConfig([None], [tqc], quantized=True, reason="test")
    return {"y": tqc}


def test_control_flow_calibrates_in_onnxruntime_as_in_the_executor(tmp_path):
    path = _if_model(tmp_path / "if.onnx")
    feeds = [{"x": np.linspace(-2, 3, 4, dtype=np.float32)[None], "flag": np.array(True)}]
    scales = {}
    for engine in ("auto", "torch"):
        graph = qtool.load(path)
        configs = _attach_relu(graph, UINT8)
        stats = calibrate(graph, load_calibration_data(feeds, graph, layout="feeds"), progress=False, engine=engine)
        assert stats["engine"] == ("onnxruntime" if engine == "auto" else "torch")
        scales[engine] = configs["y"].scale
    np.testing.assert_allclose(scales["auto"], 3 / 255, rtol=1e-6)
    np.testing.assert_array_equal(scales["auto"], scales["torch"])


def test_an_op_without_a_torch_kernel_runs_in_onnxruntime_with_the_same_result(tmp_path, attach):
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["m"], name="mvn", axes=[1, 2]),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 5])])
    path = tmp_path / "mvn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    samples = np.random.default_rng(0).normal(size=(8, 3, 5)).astype(np.float32)
    stats, ours = _calibrated(path, samples, UINT8, "auto", attach=attach, batch_size=8)
    _, theirs = _calibrated(path, samples, UINT8, "torch", attach=attach, batch_size=8)
    assert stats["engine"] == "onnxruntime"
    _assert_same(ours, theirs, rtol=1e-5)


def test_a_device_other_than_the_cpu_keeps_the_executor(cnn):
    assert ort_engine.refusal(cnn, "cpu") is None
    assert ort_engine.refusal(cnn, "cuda") == "device 'cuda' (onnxruntime statistics run on the CPU)"


def _matmul_graph(weight: np.ndarray) -> qtool.Graph:
    """x @ weight, the weight cast to float32 first where it is stored in another type."""
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
                              [numpy_helper.from_array(weight, "w")])
    return from_model_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_weights_beyond_one_protobuf_keep_onnxruntime_where_they_go_beside_the_model(monkeypatch, attach):
    """Weights over the protobuf limit reach onnxruntime as arrays beside the model (its external initializers):
    such a model was calibrated with the executor, which then made every default run compare the written model with
    the simulation (a 2.4 GB MLP: 9.5 GB peak); weights of a type no OrtValue holds stay in the model, and refuse it
    still."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 64)).astype(np.float32)
    monkeypatch.setattr(ort_engine, "PROTO_LIMIT", weight.nbytes // 4)  # either weight alone passes it
    graph = _matmul_graph(weight)
    assert ort_engine.refusal(graph, "cpu") is None
    attach(graph, UINT8)
    stats = calibrate(graph, {"x": rng.standard_normal((8, 64)).astype(np.float32)}, progress=False)
    assert stats["engine"] == "onnxruntime"
    halved = _matmul_graph(weight.astype(ml_dtypes.bfloat16))
    assert "exceed one ModelProto" in ort_engine.refusal(halved, "cpu")


def test_an_unknown_engine_is_refused(cnn, cnn_samples, attach):
    attach(cnn, UINT8)
    with pytest.raises(CalibrationError, match="calibration engine 'tensorrt' is not one of auto, onnxruntime, torch"):
        calibrate(cnn, cnn_samples, progress=False, engine="tensorrt")


def test_the_fallbacks_outlier_scan_reads_onnxruntime_values_equal_to_the_executors(cnn, cnn_samples):
    from qtool.executor import TorchExecutor
    from qtool.passes.accuracy.outliers import outlier_ratios
    from qtool.passes.accuracy.running import ort_float_values

    executor = TorchExecutor(cnn)
    ops = [op for op in cnn.topological_order() if op.op_type in ("Conv", "Gemm")]
    batches = [{"x": cnn_samples[:12]}, {"x": cnn_samples[12:]}]
    assert ort_float_values(executor, batches, ["x"]) is not None
    ratios = outlier_ratios(cnn, batches, ops)
    with executor.mode(quantize=False):
        for op in ops:
            x = np.abs(np.concatenate([executor.forward(b, [op.inputs[0].name])[0] for b in batches]))
            peaks = np.sort(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).max(axis=1))
            assert ratios[op.name] == pytest.approx(peaks[-1] / peaks[(len(peaks) - 1) // 2], rel=1e-5), op.name


def test_the_fallbacks_float_runs_keep_the_executor_for_ops_only_qtool_runs(tmp_path, qtool_only_op):
    from qtool.executor import TorchExecutor
    from qtool.passes.accuracy.running import ort_float_values

    node = helper.make_node(qtool_only_op[1], ["x"], ["y"], name="copy", domain=qtool_only_op[0])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid(qtool_only_op[0], 1)]), tmp_path / "m.onnx")
    graph = qtool.load(tmp_path / "m.onnx")
    assert ort_engine.refusal(graph, "cpu") == "op 'copy' (test.qtool_only::Copy) runs only through a qtool kernel"
    assert ort_float_values(TorchExecutor(graph), [], ["y"]) is None


def test_a_model_that_fixes_its_batch_is_calibrated_by_onnxruntime_in_whole_batches(tmp_path, attach):
    from qtool.testing.feed_models import shuffle_batch1_model

    path = shuffle_batch1_model(tmp_path / "shuffle.onnx")  # a Reshape bakes in batch 1
    samples = np.random.default_rng(0).normal(size=(4, 3, 6, 6)).astype(np.float32)
    stats, ours = _calibrated(path, samples, UINT8, "auto", attach=attach, batch_size=4)
    _, theirs = _calibrated(path, samples, UINT8, "torch", attach=attach, batch_size=4)
    assert stats["engine"] == "onnxruntime" and "engine_note" not in stats and stats["batches"] == 4
    _assert_same(ours, theirs, rtol=1e-5)


def test_weights_reach_onnxruntime_as_arrays_with_the_values_a_whole_model_gives(cnn_path, cnn_samples):
    import onnxruntime as ort

    graph = qtool.load(cnn_path)
    tensors = [op.outputs[0].name for op in graph.topological_order()]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    model = qtool.to_model_proto(graph)  # every weight's bytes in the model
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors[:-1])
    whole = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = whole.run(tensors, {"x": cnn_samples})
    weight = max(graph.parameters(), key=lambda v: v.value.nbytes)
    weight.float_value, weight.value = weight.value, np.zeros_like(weight.value)  # baked: float runs read float_value
    model, arrays = ort_engine._augmented(graph, tensors)
    assert weight.name in arrays and np.array_equal(arrays[weight.name], weight.float_value)
    assert model.ByteSize() < weight.float_value.nbytes  # the model names the big weights, without their bytes
    run = ort_engine.OrtFloatRun(graph, tensors, threads=1)
    got = {name: a for piece in run.run({"x": cnn_samples}, splittable=True) for name, a in piece.items()}
    for name, array in zip(tensors, expected, strict=True):
        np.testing.assert_array_equal(got[name], array, err_msg=name)  # bit for bit


def test_a_float_run_onnxruntime_fails_names_the_node_and_the_reason():
    """A model ONNX Runtime loads but cannot run on the data (a Reshape to a shape the batch does not fill): the
    passes' float run says so in one line, without ORT's C++ source location."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="fold"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([4, -1], np.int64), "shape")]),
        opset_imports=[helper.make_opsetid("", 17)])
    graph = from_model_proto(model)
    runs = ort_float_arrays(graph, "cpu", [{"x": np.zeros((3, 6), np.float32)}], ["r"])
    with pytest.raises(QtoolError) as caught:
        list(runs)
    message = str(caught.value)
    assert message.startswith("the float model fails in ONNX Runtime at node 'fold' (Reshape): ")
    assert "\n" not in message and ".cc:" not in message and ".h:" not in message


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_calibration_records_the_shapes_it_saw_a_varying_dimension_left_open(tmp_path, engine):
    """What an exporter may read where the model states no shape (``Graph.observed_shapes``): feeds of 5 and 7
    frames give the frames axis no number, the others theirs."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, frames, 3)).astype(np.float32)} for frames in (5, 7)]
    graph = qtool.load(path)
    _attach_relu(graph, UINT8)

    stats = calibrate(graph, load_calibration_data(feeds, graph, layout="feeds"), progress=False, engine=engine)

    assert stats["engine"] == ("onnxruntime" if engine == "auto" else "torch")
    assert graph.observed_shapes == {"y": (1, None, 3)}
