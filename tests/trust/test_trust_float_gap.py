"""Float vs quantized in the quantize summary: on held-out samples where the data has some beyond --calib-samples,
else on calibration samples and saying so; holding samples out never changes what calibration computes."""

import json

import numpy as np
import pytest
import qtool
from qtool.analysis.float_gap import float_vs_quantized
from qtool.calibration import load_calibration_data
from qtool.cli.main import main
from qtool.testing.models import calibration_file, matmul_sqrt_model, small_model

CALIBRATED = 8


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The model, 14 samples, and a file of only the first 8 of them."""
    folder = tmp_path_factory.mktemp("gap")
    model = small_model(folder / "m.onnx")
    every = calibration_file(qtool.load(model), folder / "every.npz", count=14)
    with np.load(every) as arrays:
        np.savez(folder / "first.npz", **{k: a[:CALIBRATED] for k, a in arrays.items()})
    return model, every, folder / "first.npz"


def arrays(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_held_out_samples_are_those_after_max_samples(small):
    model, every, _ = small
    graph = qtool.load(model)
    data = load_calibration_data(every, graph, batch_size=3, max_samples=CALIBRATED)
    held = data.held_out(8)
    expected = next(iter(arrays(every).values()))[CALIBRATED:]
    assert len(held) == 6 and all(next(iter(s.values())).shape[0] == 1 for s in held)
    np.testing.assert_array_equal(np.concatenate([next(iter(s.values())) for s in held]), expected)
    assert len(data.held_out(2)) == 2
    assert load_calibration_data(every, graph, batch_size=3).held_out(8) == []  # calibration reads it all
    assert load_calibration_data(every, graph, batch_size=3, max_samples=14).held_out(8) == []


def test_held_out_feeds_pass_over_nonfinite_ones_without_refusing():
    graph = qtool.Graph()
    graph.inputs.append(graph.add_variable("x", shape=[2, 3], dtype=np.dtype(np.float32)))
    feeds = [{"x": np.full((2, 3), float(i), np.float32)} for i in range(5)]
    feeds[3]["x"][0, 0] = np.nan
    data = load_calibration_data(feeds, graph, batch_size=1, layout="feeds", max_samples=2)
    assert [float(f["x"][1, 1]) for f in data.held_out(8)] == [2.0, 4.0]


def test_summary_measures_on_held_out_samples_and_calibration_is_unchanged(small, tmp_path):
    model, every, first = small
    held = qtool.quantize(model, "onnxruntime", every, max_samples=CALIBRATED, output=tmp_path / "held.onnx")
    plain = qtool.quantize(model, "onnxruntime", first, output=tmp_path / "plain.onnx")
    assert (tmp_path / "held.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()
    gap, plain_gap = held.summary["float_vs_quantized"], plain.summary["float_vs_quantized"]
    assert gap["held_out"] is True and gap["samples"] == 6
    assert plain_gap["held_out"] is False and plain_gap["samples"] == CALIBRATED
    name = qtool.load(model).outputs[0].name
    rest = [{k: a[i : i + 1] for k, a in arrays(every).items()} for i in range(CALIBRATED, 14)]
    direct = float_vs_quantized(held.graph, rest)["outputs"][name]
    assert gap["outputs"][name] == direct and gap["outputs"][name] != plain_gap["outputs"][name]


def test_the_summary_line_says_which_samples(small, tmp_path, capsys):
    model, every, first = small
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(every), "--calib-samples",
                 str(CALIBRATED), "-o", str(tmp_path / "a.onnx")]) == 0
    assert "float vs quantized on 6 held-out samples, measured on onnxruntime " in capsys.readouterr().out
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(first),
                 "-o", str(tmp_path / "b.onnx")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("float vs quantized"))
    assert "8 calibration samples (seen by calibration; --calib-samples" in line


def test_the_summary_counts_model_calls_in_the_feeds_layout(small, tmp_path, capsys):
    """Each feed is one model call (whatever it holds): the summary counted them as samples."""
    model, every, _ = small
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    data = arrays(every)
    for j in range(14):
        np.savez(feeds / f"{j:03d}.npz", **{k: a[j:j + 1] for k, a in data.items()})
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(feeds), "--calib-layout",
                 "feeds", "--calib-samples", "10", "-o", str(tmp_path / "a.onnx"), "--json"]) == 0
    gap = json.loads(capsys.readouterr().out)["summary"]["float_vs_quantized"]
    assert gap["unit"] == "model call" and gap["held_out"] and gap["samples"] == 4
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(feeds), "--calib-layout",
                 "feeds", "--calib-samples", "10", "-o", str(tmp_path / "b.onnx")]) == 0
    assert "float vs quantized on 4 held-out model calls, measured on onnxruntime " in capsys.readouterr().out


def test_a_restored_state_never_claims_held_out_samples(small, tmp_path):
    model, every, first = small
    qtool.quantize(model, "onnxruntime", every, save_state=tmp_path / "state.json")  # calibrated on all 14
    restored = qtool.quantize(model, "onnxruntime", every, max_samples=CALIBRATED, load_state=tmp_path / "state.json")
    gap = restored.summary["float_vs_quantized"]
    assert gap["held_out"] is False and gap["from_state"] is True and gap["samples"] == CALIBRATED
    from qtool.cli.quantize import float_gap_lines

    assert float_gap_lines(gap)[0].startswith(f"float vs quantized on {CALIBRATED} samples of the data (the state "
                                              "file's calibration saw data of its own)")


def test_reused_simulations_and_one_batch_give_the_per_sample_sums(small):
    """The agreement check's simulated samples are reused and the rest run as one batch: the same error sums as
    one executor run per sample, to float rounding."""
    from qtool.pipeline import simulate

    model, every, _ = small
    result = qtool.quantize(model, "onnxruntime", every)
    samples = result.calibration.samples(8)
    plain = float_vs_quantized(result.graph, samples)
    shared = float_vs_quantized(result.graph, samples, batchable=True, simulated=simulate(result.graph, samples[:4]))
    assert plain.keys() == shared.keys() and plain["outputs"].keys() == shared["outputs"].keys()
    for name, found in plain["outputs"].items():
        assert shared["outputs"][name]["sqnr_db"] == pytest.approx(found["sqnr_db"], abs=0.05), name
        assert shared["outputs"][name]["cosine"] == pytest.approx(found["cosine"], abs=1e-6), name


def _kept_above(path, threshold: float) -> str:
    """y = the values of x (4,) above ``threshold``, doubled: a floating output whose length depends on the data."""
    from onnx import TensorProto, helper, numpy_helper, save

    node = helper.make_node
    graph = helper.make_graph(
        [node("Greater", ["x", "t"], ["mask"]), node("NonZero", ["mask"], ["where"]),
         node("Squeeze", ["where", "axis"], ["index"]), node("Gather", ["x", "index"], ["kept"]),
         node("Mul", ["kept", "two"], ["y"])], "kept",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(np.array(threshold, np.float32), "t"),
         numpy_helper.from_array(np.array([0], np.int64), "axis"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_a_floating_output_whose_shape_differs_is_measured_on_the_other_samples(tmp_path, capsys):
    """Quantization can change how many boxes a NonMaxSuppression keeps: on those samples the output has another
    shape. It was counted as a 0 % 'equal share' in place of its SQNR; the other samples are measured now."""
    import onnxruntime as ort
    from qtool.analysis.float_gap import Deployed
    from qtool.cli.quantize import float_gap_lines

    graph = qtool.load(_kept_above(tmp_path / "float.onnx", 0.5))
    other = ort.InferenceSession(_kept_above(tmp_path / "other.onnx", 0.45), providers=["CPUExecutionProvider"])
    deployed = Deployed("a run keeping more", lambda samples, names: [other.run(names, s) for s in samples])
    samples = [{"x": np.array(v, np.float32)} for v in ([0.9, 0.1, 0.7, 0.2], [0.48, 0.9, 0.1, 0.6],
                                                        [0.3, 0.8, 0.55, 0.0])]
    gap = float_vs_quantized(graph, samples, deployed=deployed)
    assert gap["outputs"]["y"] == {"sqnr_db": None, "cosine": 1.0, "shape_differs": 1}  # the second keeps 0.48 too
    assert "y: SQNR exact, cosine 1.000000 (its shape differs from the float model's on 1 of 3 samples, measured on " \
           "the others)" in " ".join(float_gap_lines(gap))
    gap = float_vs_quantized(graph, samples[1:2], deployed=deployed)
    assert gap["outputs"]["y"] == {"sqnr_db": None, "cosine": None, "shape_differs": 1}
    assert float_gap_lines(gap)[-1] == "  y: its shape differs from the float model's on 1 of 1 sample"


def test_an_output_with_nan_is_measured_on_its_finite_elements(tmp_path):
    """One NaN made every sum NaN: the summary read 'SQNR exact, cosine -1.000000' for a quantized MatMul; the
    elements NaN or infinite in either model are left out now, and those so in one model only are counted."""
    import onnxruntime as ort
    from qtool.cli.quantize import float_gap_lines

    model = matmul_sqrt_model(tmp_path / "sqrt.onnx")
    rng = np.random.default_rng(4)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=3 * rng.standard_normal((8, 16)).astype(np.float32))
    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx")

    gap = result.summary["float_vs_quantized"]
    found = gap["outputs"]["y"]
    float_run, quantized = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                            for p in (model, tmp_path / "q.onnx"))
    x = np.load(calib)["x"]
    a, b = (s.run(None, {"x": x})[0].astype(np.float64) for s in (float_run, quantized))
    finite = np.isfinite(a) & np.isfinite(b)
    signal, noise = (a[finite] ** 2).sum(), ((a - b)[finite] ** 2).sum()
    differs = (np.isnan(a) != np.isnan(b)).sum()
    assert np.isnan(a).sum() > 100 and gap["samples"] == 8
    assert found["sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), abs=0.01)
    assert 0.99 < found["cosine"] <= 1.0 and found.get("nonfinite_differs", 0) == differs
    assert f"y: SQNR {found['sqnr_db']:.1f} dB" in " ".join(float_gap_lines(gap))


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_elements_nan_in_both_tensors_agree():
    """An output NaN where the float one is NaN, the same elsewhere, is exact; a NaN of its own is counted (and
    numpy's 'invalid value' warning, which the summed infinities raised on the console, is not shown)."""
    from qtool.analysis import ErrorAccumulator

    ref = np.array([1.0, np.nan, -np.inf, 2.0])
    same, own = ErrorAccumulator(), ErrorAccumulator()
    same.update(ref, ref.copy())
    own.update(ref, np.array([np.nan, np.nan, -np.inf, 2.5]))
    assert (same.snr_db, same.cosine, same.nonfinite) == (float("inf"), 1.0, 0)
    assert own.nonfinite == 1 and own.finite_snr_db == pytest.approx(10 * np.log10(4 / 0.25))
    assert own.snr_db == float("-inf")  # the fallback's budget, the analysis: an infinite error there


def test_an_output_nan_or_infinite_where_the_float_one_is_not_is_a_warning():
    """Left out of the SQNR, elements one model alone makes NaN or infinite (a quantized Log of 0) still warn: the
    rest of the output may read well."""
    from qtool.analysis.float_gap import far_from_float

    gap = {"samples": 8, "measured_on": "onnxruntime",
           "outputs": {"y": {"sqnr_db": 41.0, "cosine": 0.9999, "nonfinite_differs": 3},
                       "z": {"sqnr_db": 41.0, "cosine": 0.9999}}}

    (found,) = far_from_float(gap)
    assert (found.code, found.tensor) == ("output.far-from-float", "y")
    assert "3 element(s) NaN or infinite in one model only, and elsewhere SQNR 41.0 dB" in found.message


def test_a_float_output_of_zeros_the_quantized_one_misses_has_no_sqnr():
    """An output 0 everywhere in the float model but not in the quantized one read 'SQNR exact' (its SNR, -inf,
    was written as null): it is undefined now, and a WARNING."""
    from qtool.analysis import ErrorAccumulator
    from qtool.analysis.float_gap import far_from_float, output_entry
    from qtool.cli.quantize import float_gap_lines

    missed, exact = ErrorAccumulator(), ErrorAccumulator()
    missed.update(np.zeros(4), np.array([0.0, 0.1, 0.0, -0.1]))
    exact.update(np.zeros(4), np.zeros(4))
    gap = {"samples": 8, "measured_on": "onnxruntime", "held_out": False,
           "outputs": {"y": output_entry(missed), "z": output_entry(exact)}}

    assert gap["outputs"]["y"] == {"sqnr_db": None, "cosine": 0.0, "zero_signal": True}
    assert gap["outputs"]["z"] == {"sqnr_db": None, "cosine": 1.0}
    lines = " ".join(float_gap_lines(gap))
    assert "y: SQNR undefined (the float output is 0 everywhere, the quantized one is not)" in lines
    assert "z: SQNR exact" in lines
    assert [d.tensor for d in far_from_float(gap)] == ["y"]
