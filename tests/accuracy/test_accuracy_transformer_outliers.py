"""Transformer outliers fixed without returning layers to float: ChannelSplit (outlier input channels split into
smaller copies) and OutlierOutputs (a MatMul output with an outlier channel written float by the integer kernel),
both on by default for onnxruntime; checked on the exported models in ONNX Runtime."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
import torch
from accuracy_helpers import export, samples, snr_db
from qtool.ir import to_model_proto
from qtool.passes.accuracy import ChannelSplit, OutlierOutputs
from qtool.passes.accuracy.options import AccuracyError
from qtool.testing.decoder import tiny_decoder_proto
from torch import nn

UP, DOWN = "/up/MatMul", "/down/MatMul"
OFF = {"channel_split": False, "outlier_outputs": False}


class Block(nn.Module):
    """x -> LayerNorm -> up -> GELU -> down -> + x, as in a transformer block. ``gelu_outlier``: the GELU output's
    channel 0 sits near 40 (the rest within [-0.17, ~3]) and ``down`` reads it with weights as large as the
    others (it matters); ``residual_outlier``: ``down`` writes output channel 0 about 100x the other channels."""

    def __init__(self, gelu_outlier: bool = True, residual_outlier: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm, self.up, self.down = nn.LayerNorm(16), nn.Linear(16, 64), nn.Linear(64, 16)
        with torch.no_grad():
            if gelu_outlier:
                self.up.bias[0] = 40.0
                self.down.weight[:, 0] = 0.05 * torch.randn(16)
            if residual_outlier:
                self.down.weight[0, :] *= 100.0

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


def _model(tmp_path, name="block", example=(1, 8, 16), **kwargs) -> Path:
    path = tmp_path / f"{name}.onnx"
    export(Block(**kwargs), torch.zeros(*example), path)
    return path


def _ort(path_or_proto, batches) -> np.ndarray:
    model = path_or_proto if isinstance(path_or_proto, str | Path) else path_or_proto.SerializeToString()
    session = ort.InferenceSession(str(model) if isinstance(model, Path) else model,
                                   providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, batch)[0] for batch in batches])


def _kernels(path) -> list[str]:
    """The op types of the graph ONNX Runtime builds for ``path`` (CPU, all optimizations)."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def _quantize(tmp_path, model, calib, name, **kwargs):
    output = tmp_path / f"{name}.onnx"
    result = qtool.quantize(str(model), "onnxruntime", calib, output=output, **kwargs)
    return result, {r.name: r for r in result.pass_runs}, output


@pytest.mark.parametrize("opset", [17, 20])
def test_split_keeps_the_function_and_narrows_the_input(tmp_path, calib, held_out, opset):
    """Opset 17 writes GELU as Erf and two Muls (the copies' division goes into its ``* 0.5``), opset 20 as one
    Gelu (a Mul after the Concat divides them)."""
    path = tmp_path / "block.onnx"
    torch.onnx.export(Block().eval(), (torch.zeros(1, 8, 16),), str(path), dynamo=False, opset_version=opset,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    graph = qtool.load(path)
    before = _ort(to_model_proto(graph), held_out)
    result = ChannelSplit(calib, samples=32, max_growth=0.25).call(graph)
    split = {entry["op"]: entry for entry in result.details["split"]}
    assert list(split) == [DOWN] and split[DOWN]["outlier_ratio"] > 8  # the LayerNorm output has no outlier
    assert 4 <= split[DOWN]["extra_channels"] <= 16
    down = graph.operations[DOWN]
    assert down.inputs[1].value.shape == (64 + split[DOWN]["extra_channels"], 16)
    if opset == 17:
        assert split[DOWN]["by"].startswith("Mul /") and down.inputs[0].producer.op_type == "Concat"
    else:
        assert split[DOWN]["by"] == "Mul after the Concat"
        assert [down.inputs[0].producer.op_type, down.inputs[0].producer.inputs[0].producer.op_type] == ["Mul",
                                                                                                          "Concat"]
    after = _ort(to_model_proto(graph), held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    x = np.concatenate([b["x"] for b in calib])
    widths = _ort_value(graph, down.inputs[0].name, x)
    peaks = np.abs(widths).reshape(-1, widths.shape[-1]).max(0)
    assert peaks.max() <= 4.2 * np.median(peaks) and peaks[0] < peaks.max() * 1.001  # within about ratio (4) x median


def _ort_value(graph, name, x) -> np.ndarray:
    model = to_model_proto(graph)
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"x": x})[0]


def _gemm(rows: np.ndarray) -> qtool.Graph:
    """x [batch, 16] -> Gemm with weight ``rows`` (16 x 4) -> y."""
    graph = qtool.Graph()
    x, y = graph.add_variable("x", dtype=np.dtype(np.float32)), graph.add_variable("y", dtype=np.dtype(np.float32))
    x.shape = ["batch", 16]
    graph.inputs.append(x)
    weight = graph.add_variable("w", rows.astype(np.float32))
    graph.add_operation("Gemm", [x, weight], [y], name="gemm")
    graph.outputs.append(y)
    graph.info.opset_imports[""] = 17
    return graph


def _outlier_input(seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((16, 16)) * np.r_[40.0, np.ones(15)]).astype(np.float32)}]


def test_split_without_a_mul_to_fold_into_inserts_one():
    """A Gemm reading a graph input with one channel 40x the rest: Gather, then a Mul dividing the copies."""
    graph, data = _gemm(np.random.default_rng(0).standard_normal((16, 4))), _outlier_input()
    before = _ort(to_model_proto(graph), data)
    result = ChannelSplit(data, max_growth=0.5).call(graph)
    assert result.details["split"][0]["by"] == "Mul after the Concat"
    assert graph.operations["gemm"].inputs[0].producer.op_type == "Mul"
    np.testing.assert_allclose(_ort(to_model_proto(graph), data), before, rtol=1e-5, atol=1e-4)


def test_no_split_where_it_would_not_lower_the_error():
    """The outlier channel carries nearly all the weight: its copies' rounding (alike) is the layer's error, and
    splitting cannot lower it; nothing changes and the details say why."""
    rows = np.r_[np.ones((1, 4)), np.full((15, 4), 1e-3)]
    graph, data = _gemm(rows), _outlier_input()
    result = ChannelSplit(data, max_growth=0.5).call(graph)
    assert not result.modified and result.details["split"] == []
    [kept] = result.details["not_split"]
    assert kept["op"] == "gemm" and kept["error_ratio"] > 0.5 and "max_error_ratio" in kept["reason"]
    assert graph.operations["gemm"].inputs[0].name == "x"


def test_an_input_holding_infinity_is_left_as_it_is():
    """An infinite peak (a mask's -inf given as an input) is no outlier to split: calibration keeps such a tensor
    float. The limits' bisection divided infinity by infinity and cast NaN to int64 (two RuntimeWarnings)."""
    data = _outlier_input()
    data[0]["x"][3, 5] = -np.inf
    graph = _gemm(np.random.default_rng(0).standard_normal((16, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ChannelSplit(data, max_growth=0.5).call(graph)
    assert not result.modified and result.details == {"split": [], "not_split": []}


def test_growth_is_capped(calib, tmp_path):
    graph = qtool.load(_model(tmp_path))
    result = ChannelSplit(calib, max_growth=0.05).call(graph)
    [entry] = result.details["split"]
    assert entry["extra_channels"] == 3 and entry["error_ratio"] < 0.5  # 5 % of 64 channels, not 9
    x = np.concatenate([b["x"] for b in calib])
    split = _ort_value(graph, graph.operations[DOWN].inputs[0].name, x)
    peaks = np.abs(split).reshape(-1, split.shape[-1]).max(0)
    assert np.argmax(peaks) >= 64 or np.isclose(peaks[0], peaks.max())  # no channel left above the copies


def test_default_quantizes_every_matmul_and_gains_in_ort(tmp_path, calib, held_out):
    model = _model(tmp_path)
    reference = _ort(model, held_out)
    result, runs, output = _quantize(tmp_path, model, calib, "default")
    _, plain_runs, plain = _quantize(tmp_path, model, calib, "plain", accuracy={**OFF, "fallback": False})
    assert "ChannelSplit" not in plain_runs and runs["ChannelSplit"].modified
    assert all(op.quant.quantized for op in result.graph.operations.values() if op.op_type == "MatMul")
    with_split, without = snr_db(_ort(output, held_out), reference), snr_db(_ort(plain, held_out), reference)
    assert with_split > without + 3, (without, with_split)  # measured 36.8 -> 42.1 dB (3 extra channels of 64)
    kernels = _kernels(output)
    assert kernels.count("QLinearMatMul") + kernels.count("MatMulIntegerToFloat") == 2 and "MatMul" not in kernels


def test_outlier_output_written_float_by_the_integer_kernel(tmp_path, calib, held_out):
    model = _model(tmp_path, gelu_outlier=False, residual_outlier=True)
    reference = _ort(model, held_out)
    result, runs, output = _quantize(tmp_path, model, calib, "outputs")
    _, _, plain = _quantize(tmp_path, model, calib, "plain", accuracy=OFF)
    assert [entry["op"] for entry in runs["OutlierOutputs"].details["float_outputs"]] == [DOWN]
    down = result.graph.operations[DOWN]
    assert down.quant.quantized and not down.quant.outputs[0].is_settled
    assert "channel outlier" in down.quant.outputs[0].notes["reason"]
    assert "MatMulIntegerToFloat" in _kernels(output) and "MatMul" not in _kernels(output)
    with_rule, without = snr_db(_ort(output, held_out), reference), snr_db(_ort(plain, held_out), reference)
    assert with_rule > without + 3, (without, with_rule)  # measured 31.1 -> 36.5 dB


def test_no_float_output_where_ort_would_fold_a_float_gemm(tmp_path):
    """Fully known shapes: ORT's MatMulAddFusion would make MatMul + bias Add a float Gemm; the output stays
    quantized (QLinearMatMul)."""
    path = tmp_path / "static.onnx"
    torch.onnx.export(Block(gelu_outlier=False, residual_outlier=True).eval(), (torch.zeros(2, 8, 16),), str(path),
                      dynamo=False, input_names=["x"], output_names=["y"])
    calib = [{"x": b["x"][:2]} for b in samples((8, 16), 8)]
    _, runs, output = _quantize(tmp_path, path, calib, "static-q")
    assert runs["OutlierOutputs"].details["float_outputs"] == []
    assert "Gemm" not in _kernels(output) and "MatMul" not in _kernels(output)


def test_nothing_changes_without_outliers(tmp_path, calib):
    result, runs, _ = _quantize(tmp_path, _model(tmp_path, gelu_outlier=False), calib, "none")
    assert not runs["ChannelSplit"].modified and runs["ChannelSplit"].details["split"] == []
    assert not runs["OutlierOutputs"].modified
    assert not any(op.op_type == "Gather" for op in result.graph.operations.values())


def test_options_checked(calib):
    with pytest.raises(AccuracyError, match="accuracy.channel_split.ratio: must be a number in"):
        ChannelSplit(calib, ratio=0.5)
    with pytest.raises(AccuracyError, match="accuracy.channel_split.max_growth: must be a number in"):
        ChannelSplit(calib, max_growth=2)
    with pytest.raises(AccuracyError, match="accuracy.channel_split.op_types: must be a list of"):
        ChannelSplit(calib, op_types=["Conv"])
    with pytest.raises(AccuracyError, match="accuracy.outlier_outputs.op_types: must be a list of"):
        OutlierOutputs(calib, op_types=["Gemm"])
    with pytest.raises(AccuracyError, match="accuracy.channel_split.data: ChannelSplit needs calibration data"):
        ChannelSplit(None)


def test_a_state_of_a_split_model_needs_calibration_data_again(tmp_path, calib):
    """Not supported yet: restoring without data leaves the split out, and the state names the ops it misses."""
    model, state = _model(tmp_path), tmp_path / "state.json"
    qtool.quantize(str(model), "onnxruntime", calib, save_state=state)
    with pytest.raises(qtool.QtoolError,
                       match="ops not in the model: '/down/MatMul_split_copies', '/down/MatMul_split'"):
        qtool.quantize(str(model), "onnxruntime", None, load_state=state)
    again = qtool.quantize(str(model), "onnxruntime", calib, load_state=state)  # with the data: the same split
    assert again.graph.operations[DOWN].inputs[0].producer.op_type == "Mul"


def test_cli_says_what_the_passes_changed(tmp_path, calib, capsys):
    from qtool.cli.main import main

    data = tmp_path / "calib.npz"
    np.savez(data, x=np.concatenate([b["x"] for b in calib]))
    model = _model(tmp_path, residual_outlier=True)
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(data),
                 "--output", str(tmp_path / "cli.onnx")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "channel split, outlier input channels read as int8 copies: 1 layer" in out
    assert f"{DOWN}: +" in out and "of 64 input channels (input channel outlier" in out
    assert f"outlier outputs written float by the integer kernel: 1 layer {DOWN} (output channel outlier" in out


@pytest.mark.parametrize("outliers", [0, 4])
@pytest.mark.parametrize("layout", ["feeds", "samples"])
def test_deciding_from_calibrations_run_gives_the_same_model(tmp_path, outliers, layout):
    """ChannelSplit decides from calibration's float run (the default): where nothing splits, the passes go on;
    where a layer splits, they start over with the peaks that run measured. Either way the written model is the
    one a ChannelSplit with a float run of its own gives, byte for byte."""
    onnx.save(tiny_decoder_proto(layers=2, outliers=outliers), tmp_path / "decoder.onnx")
    ids = np.random.default_rng(0).integers(0, 256, (20, 32)).astype(np.int64)
    data = [{"input_ids": ids[i:i + 1]} for i in range(20)] if layout == "feeds" else {"input_ids": ids}
    options = {"calib_layout": layout, "config": {"calibration": {"batch_size": 16}}}
    written = {}
    for share_run in (False, True):
        output = tmp_path / f"{share_run}.onnx"
        result = qtool.quantize(tmp_path / "decoder.onnx", "onnxruntime", data, output=output,
                                accuracy={"channel_split": {"share_run": share_run}}, **options)
        runs = {run.name: run for run in result.pass_runs}
        written[share_run] = (output.read_bytes(), runs["ChannelSplit"].details["split"])
        assert runs["ChannelSplit"].modified == bool(outliers)
    assert written[True] == written[False] and (written[True][1] != []) == bool(outliers)
    names = [run.name for run in result.pass_runs]
    assert ("StartOver" in names) == bool(outliers)
    assert names.count("ChannelSplit") == names.count("CrossLayerEqualization") == 1  # only the asking pass on
    if outliers:
        assert names[names.index("StartOver") + 1] == "ChannelSplit"
        assert result.pass_runs[names.index("StartOver")].details == {"acts": ["ChannelSplit"]}


def test_a_split_calibration_could_not_measure_runs_its_own(calib):
    """Where calibration's run could not measure the first samples whole (or the executor calibrated), the
    deferred decision starts the passes over without peaks: ChannelSplit then runs its own float run."""
    from qtool.passes import StartOver

    split = ChannelSplit(calib)
    graph = _gemm(np.ones((4, 4), np.float32))
    tap = split.calibration_tap(graph)
    assert tap is None  # it decided nothing yet: there is nothing to hand to calibration
    split._deferred = {"split": [], "not_split": []}
    tap = split.calibration_tap(graph)
    with pytest.raises(StartOver) as over:
        tap.finish(False)
    assert over.value.advice == {"ChannelSplit": None}
    split.start_over_with(None)
    assert not split.may_start_over and split.known is None


def test_no_calibration_warning_about_an_output_written_float(tmp_path):
    """Calibration warned that most of a MatMul output's values round to 0 on its grid; OutlierOutputs then wrote
    that output float (for the outlier channel that made the grid coarse), and the summary kept the warning about
    a grid no written file holds. It stays where the output is quantized."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    weight[:, 3] *= 100  # one output channel ~100x the others
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         onnx.helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], axis=-1, name="norm")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 32])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(np.ones(32, np.float32), "g"),
         onnx.numpy_helper.from_array(np.zeros(32, np.float32), "b")])
    model = tmp_path / "proj.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), model)
    feeds = samples((16,), 64)

    result, runs, _ = _quantize(tmp_path, model, feeds, "outputs")
    plain, _, _ = _quantize(tmp_path, model, feeds, "plain", accuracy=OFF)

    assert [entry["op"] for entry in runs["OutlierOutputs"].details["float_outputs"]] == ["proj"]
    assert [d.tensor for d in result.diagnostics if d.code == "calibration"] == []
    assert [d.tensor for d in plain.diagnostics if d.code == "calibration"] == ["h"]


def test_a_tensor_calibration_keeps_float_for_its_infinity_is_named(tmp_path):
    """A MatMul input holding an infinity (a mask) is kept float by calibration, with a WARNING `calibration`
    naming it (docs/getting-started.md); the summary dropped it as a warning about a tensor a later pass kept
    float, so the model came out weight-only with no word of why."""
    model = tmp_path / "masked.onnx"
    onnx.save(to_model_proto(_gemm(np.random.default_rng(0).standard_normal((16, 4)))), model)
    feeds = _outlier_input()
    feeds[0]["x"][3, 5] = np.inf

    result = qtool.quantize(model, "onnxruntime", feeds, output=tmp_path / "q.onnx")

    found = {d.tensor: d.message for d in result.diagnostics if d.code == "calibration"}
    assert set(found) == {"x", "y"}
    assert found["x"] == "kept float by calibration: it holds 1 infinite value(s), a mask no integer grid holds"
