"""float_vs_quantized's float reference comes from the graph outputs calibration's onnxruntime run kept, only while
they are what a fresh float run would give: same samples, same float function of each output (baking keeps it, a
changed weight does not), one row per sample where samples were joined in batches; else (held-out samples, other
samples, an output without the batch axis) a run of its own."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from qtool.analysis.float_gap import FLOAT_GAP_SAMPLES, Deployed, float_gap
from qtool.calibration import KeptOutputs, calibrate, load_calibration_data, ort_engine
from qtool.passes import PassManager
from qtool.passes.parameter_quantize import ParameterQuantize
from qtool.pipeline import plan
from qtool.platform import get_platform
from qtool.testing.models import calibration_file, random_inputs, small_model, small_model_proto


@pytest.fixture
def fresh_references(monkeypatch) -> list[int]:
    """How many samples each float reference run of its own (``float_outputs``) computed, one entry per run."""
    runs = []
    compute = ort_engine.float_outputs

    def counting(graph, samples, names, device, **options):
        runs.append(len(samples))
        return compute(graph, samples, names, device, **options)

    monkeypatch.setattr(ort_engine, "float_outputs", counting)
    return runs


@pytest.fixture
def served(monkeypatch) -> list:
    """What each :meth:`KeptOutputs.reference` call gave (None: not served)."""
    found = []
    reference = KeptOutputs.reference

    def recording(self, graph, samples, names):
        found.append(reference(self, graph, samples, names))
        return found[-1]

    monkeypatch.setattr(KeptOutputs, "reference", recording)
    return found


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_model(tmp_path_factory.mktemp("kept") / "m.onnx")


def feeds(model, count: int = 10, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return random_inputs(qtool.load(model), count, seed=seed)


def deployed(files) -> Deployed:
    target = get_platform("onnxruntime")
    return Deployed(target.runtime(), lambda samples, names: target.run(files, samples, names))


def test_quantize_takes_the_reference_from_calibrations_run(model, tmp_path, fresh_references, served):
    result = qtool.quantize(model, "onnxruntime", feeds(model), calib_layout="feeds", output=tmp_path / "q.onnx")
    assert fresh_references == []  # no float session nor run of its own
    (kept,) = served
    assert kept is not None and len(kept) == FLOAT_GAP_SAMPLES
    data = load_calibration_data(feeds(model), result.graph, 1, layout="feeds")
    samples = data.samples(FLOAT_GAP_SAMPLES)
    names = [v.name for v in result.graph.outputs]
    fresh = ort_engine.float_outputs(result.graph, samples, names, "cpu")
    for mine, theirs in zip(kept, fresh, strict=True):
        for name in names:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-6, atol=1e-7)
    alone = float_gap(result.graph, data, deployed=deployed(result.files))  # nothing kept: a run of its own
    assert fresh_references == [FLOAT_GAP_SAMPLES, FLOAT_GAP_SAMPLES]  # the two just above
    assert result.summary["float_vs_quantized"]["outputs"].keys() == alone["outputs"].keys()
    for name, gap in alone["outputs"].items():
        assert result.summary["float_vs_quantized"]["outputs"][name]["sqnr_db"] == gap["sqnr_db"]


def calibrated(model, data) -> tuple[qtool.Graph, KeptOutputs]:
    graph = plan(model, "onnxruntime").graph
    PassManager([ParameterQuantize()]).run(graph)
    kept = KeptOutputs(FLOAT_GAP_SAMPLES)
    calibrate(graph, data, progress=False, taps=[kept.calibration_tap(graph)])
    return graph, kept


def test_a_weight_changed_after_calibration_forces_a_fresh_reference(model, tmp_path, fresh_references, served):
    graph, kept = calibrated(model, load_calibration_data(feeds(model), qtool.load(model), 1, layout="feeds"))
    data = load_calibration_data(feeds(model), graph, 1, layout="feeds")
    samples, names = data.samples(FLOAT_GAP_SAMPLES), [v.name for v in graph.outputs]
    assert kept.reference(graph, samples, names) is not None
    conv = next(op for op in graph.topological_order() if op.op_type == "Conv")
    weight = conv.inputs[1].value
    graph.set_parameter_value(conv, 1, np.round(weight * 4) / 4, quantized=True)  # baked: float run unchanged
    assert kept.reference(graph, samples, names) is not None
    last = [op for op in graph.topological_order() if op.op_type == "Gemm"][-1]
    graph.set_parameter_value(last, 1, last.inputs[1].value * 2)  # a float weight changed
    assert kept.reference(graph, samples, names) is None
    served.clear()
    fresh = ort_engine.float_outputs(graph, samples, names, "cpu")
    gap = float_gap(graph, data, kept=kept, deployed=Deployed("a fresh float run", lambda s, n: [
        [run[name] for name in n] for run in fresh]))
    assert served == [None] and fresh_references == [FLOAT_GAP_SAMPLES, FLOAT_GAP_SAMPLES]  # fresh, float_gap's
    assert all(out["sqnr_db"] is None for out in gap["outputs"].values())  # the reference is the new float run


class Reshuffled:
    """A re-iterable source that gives other samples each time it is read (a shuffling DataLoader)."""

    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self.items, self.reads = items, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.items[self.reads % 2:] + self.items[:self.reads % 2])


def test_other_samples_than_calibration_ran_get_a_reference_of_their_own(model, tmp_path, fresh_references, served):
    result = qtool.quantize(model, "onnxruntime", Reshuffled(feeds(model)), calib_layout="feeds",
                            output=tmp_path / "q.onnx")
    assert served == [None] and fresh_references == [FLOAT_GAP_SAMPLES]
    assert result.summary["float_vs_quantized"]["samples"] == FLOAT_GAP_SAMPLES


def free_batch_model(path, output_batch: str | int = "batch"):
    """The small model with a free batch: samples are joined in batches; ``output_batch``: its output's first dim."""
    proto = small_model_proto()
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    if isinstance(output_batch, int):
        proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = output_batch
    else:
        proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = output_batch
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("budget", [ort_engine.DEFAULT_BUDGET, 1])  # 1: each run one sample, one tensor
def test_samples_joined_in_batches_keep_their_rows(tmp_path, monkeypatch, fresh_references, served, budget):
    monkeypatch.setattr(ort_engine, "DEFAULT_BUDGET", budget)
    model = free_batch_model(tmp_path / "free.onnx")
    every = calibration_file(qtool.load(model), tmp_path / "every.npz", count=12)
    result = qtool.quantize(model, "onnxruntime", every, config={"calibration": {"batch_size": 5}},
                            output=tmp_path / "a.onnx")  # batches of 5, 5 and 2 samples
    (kept,) = served
    assert kept is not None and fresh_references == []
    samples = load_calibration_data(every, result.graph, 32).samples(FLOAT_GAP_SAMPLES)
    fresh = ort_engine.float_outputs(result.graph, samples, ["output"], "cpu")  # one run per sample
    for mine, theirs in zip(kept, fresh, strict=True):
        assert mine["output"].shape == (1, 5)
        np.testing.assert_allclose(mine["output"], theirs["output"], rtol=1e-6, atol=1e-7)


def test_outputs_without_the_batch_axis_and_held_out_samples_keep_nothing(model, tmp_path, fresh_references,
                                                                           served):
    fixed = free_batch_model(tmp_path / "fixed.onnx", output_batch=1)  # the output declares no batch axis
    every = calibration_file(qtool.load(fixed), tmp_path / "every.npz", count=12)
    qtool.quantize(fixed, "onnxruntime", every, output=tmp_path / "a.onnx")
    held = qtool.quantize(model, "onnxruntime", feeds(model, 12), calib_layout="feeds", max_samples=8,
                          output=tmp_path / "b.onnx")
    assert held.summary["float_vs_quantized"]["held_out"] is True
    assert served == [None] and fresh_references == [FLOAT_GAP_SAMPLES, 4]


def test_outputs_no_observer_reads_are_returned_only_for_the_kept_samples(tmp_path, monkeypatch, fresh_references,
                                                                          served):
    proto = small_model_proto()
    proto.graph.node.append(onnx.helper.make_node("ArgMax", ["output"], ["top"], name="top", axis=1))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("top", onnx.TensorProto.INT64, [1, 1]))
    onnx.save(proto, tmp_path / "top.onnx")
    fetched = []
    run = ort_engine.OrtFloatRun._run

    def recording(self, feeds, names):
        fetched.append(list(names))
        return run(self, feeds, names)

    monkeypatch.setattr(ort_engine.OrtFloatRun, "_run", recording)
    result = qtool.quantize(tmp_path / "top.onnx", "onnxruntime", feeds(tmp_path / "top.onnx", 12),
                            calib_layout="feeds", output=tmp_path / "q.onnx")
    assert [names.count("top") for names in fetched] == [1] * FLOAT_GAP_SAMPLES + [0] * 4  # ArgMax: not observed
    assert all("output" in names for names in fetched)  # observed: every run
    assert served[0] is not None and [set(kept) for kept in served[0]] == [{"output", "top"}] * FLOAT_GAP_SAMPLES
    outputs = result.summary["float_vs_quantized"]["outputs"]
    assert fresh_references == [] and set(outputs) == {"output", "top"} and set(outputs["top"]) == {"equal_share"}


def test_outputs_beyond_the_limit_are_not_kept(model, tmp_path, monkeypatch, fresh_references, served):
    from qtool.calibration import kept_outputs

    monkeypatch.setattr(kept_outputs, "LIMIT", 3 * 5 * 4)  # the outputs of 3 samples: 5 float32 each
    qtool.quantize(model, "onnxruntime", feeds(model), calib_layout="feeds", output=tmp_path / "q.onnx")
    assert served == [None] and fresh_references == [FLOAT_GAP_SAMPLES]


@pytest.mark.parametrize("run_bytes, served_whole", [(1, True), (ort_engine.RUN_BYTES, False)])
def test_runs_of_one_sample_keep_outputs_whose_first_axis_is_named_apart(tmp_path, monkeypatch, fresh_references,
                                                                          served, run_bytes, served_whole):
    """PP-OCRv4's exporter names each output's first axis apart from the input's: nothing declares the batch axis.
    Where each run computes one sample alone, its outputs are that sample's whole; runs of several are not cut."""
    monkeypatch.setattr(ort_engine, "RUN_BYTES", run_bytes)
    model = free_batch_model(tmp_path / "apart.onnx", output_batch="another")
    every = calibration_file(qtool.load(model), tmp_path / "every.npz", count=12)
    result = qtool.quantize(model, "onnxruntime", every, output=tmp_path / "a.onnx")
    (kept,) = served
    assert (kept is not None) is served_whole
    assert fresh_references == ([] if served_whole else [FLOAT_GAP_SAMPLES])
    if served_whole:
        samples = load_calibration_data(every, result.graph, 32).samples(FLOAT_GAP_SAMPLES)
        fresh = ort_engine.float_outputs(result.graph, samples, ["output"], "cpu")
        for mine, theirs in zip(kept, fresh, strict=True):
            assert mine["output"].shape == (1, 5)
            np.testing.assert_allclose(mine["output"], theirs["output"], rtol=1e-6, atol=1e-7)


def _half_layer_norm(path, width=64):
    """MatMul, a LayerNormalization written out op by op (as exporters write it), MatMul: all in float16. A session
    fuses the normalization (computed in float32 inside), calibration's run, every tensor an output, cannot."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    values = {"w1": rng.standard_normal((width, width)) / 8, "w2": rng.standard_normal((width, width)) / 8,
              "gamma": np.full(width, 1.5), "beta": rng.standard_normal(width) / 10, "two": 2.0, "eps": 1e-5}
    steps = [("MatMul", ["x", "w1"], "m", {}), ("ReduceMean", ["m"], "mu", {"axes": [-1]}),
             ("Sub", ["m", "mu"], "c", {}), ("Pow", ["c", "two"], "sq", {}),
             ("ReduceMean", ["sq"], "var", {"axes": [-1]}), ("Add", ["var", "eps"], "ve", {}),
             ("Sqrt", ["ve"], "sd", {}), ("Div", ["c", "sd"], "n", {}), ("Mul", ["n", "gamma"], "ng", {}),
             ("Add", ["ng", "beta"], "ln", {}), ("MatMul", ["ln", "w2"], "y", {})]
    graph = helper.make_graph(
        [helper.make_node(kind, inputs, [out], **attrs) for kind, inputs, out, attrs in steps], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 16, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 16, width])],
        [numpy_helper.from_array(np.asarray(v, np.float16), k) for k, v in values.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_float16_model_is_measured_against_its_own_session(tmp_path):
    """The kept outputs of a float16 model came from ops its session fuses: 16-bit layers read 68.1 dB against
    them, 74.2 dB against the float model run as ONNX Runtime runs it."""
    import onnxruntime as ort

    model = _half_layer_norm(tmp_path / "half.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": (3 * rng.standard_normal((1, 16, 64))).astype(np.float16)} for _ in range(8)]
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx",
                            config={"activation": {"bits": 16}, "weight": {"bits": 16}})
    measured = result.summary["float_vs_quantized"]
    reference, quantized = ([ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, f)[0]
                             for f in feeds[:measured["samples"]]] for p in (model, tmp_path / "q.onnx"))
    a, b = (np.concatenate(r).astype(np.float64) for r in (reference, quantized))
    assert measured["outputs"]["y"]["sqnr_db"] == pytest.approx(10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()),
                                                               abs=0.01)
