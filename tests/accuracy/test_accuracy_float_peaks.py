"""FloatPeaks: ChannelSplit, OutlierOutputs and the fallback's outlier scan read their float peaks from one
onnxruntime run per quantize, and a peak is never served for a tensor whose float function changed since."""

from __future__ import annotations

import gc
import traceback
import weakref

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.calibration import ort_engine
from qtool.passes.accuracy.channel_split import ChannelSplit
from qtool.passes.accuracy.float_peaks import FloatPeaks
from qtool.passes.accuracy.outliers import channel_peaks
from qtool.passes.accuracy.running import take_samples
from qtool.testing.decoder import tiny_decoder_proto


@pytest.fixture
def peak_sessions(monkeypatch) -> list[ort_engine.OrtFloatRun]:
    """Every onnxruntime float session built for channel peaks, each counting the session runs it makes."""
    sessions = []
    build, run = ort_engine.OrtFloatRun.__init__, ort_engine.OrtFloatRun._run

    def counting_build(self, graph, tensors, **options):
        build(self, graph, tensors, **options)
        self.session_runs = 0
        if "channel_peaks" in [frame.name for frame in traceback.extract_stack()]:
            sessions.append(self)

    def counting_run(self, feeds, names):
        self.session_runs += 1
        return run(self, feeds, names)

    monkeypatch.setattr(ort_engine.OrtFloatRun, "__init__", counting_build)
    monkeypatch.setattr(ort_engine.OrtFloatRun, "_run", counting_run)
    return sessions


@pytest.mark.parametrize("share_run", [False, True])
def test_the_three_passes_read_their_peaks_from_one_float_run(tmp_path, monkeypatch, peak_sessions, share_run):
    """Without outliers nothing splits: ChannelSplit's own run computes the later readers' peaks too, or, sharing
    calibration's run (the default), ChannelSplit decides there and calibration's run serves the later readers:
    no float run of their own at all."""
    onnx.save(tiny_decoder_proto(layers=6, outliers=0), tmp_path / "decoder.onnx")
    np.savez(tmp_path / "calib.npz", input_ids=np.random.default_rng(0).integers(0, 256, (16, 32)).astype(np.int64))
    asked = []
    peaks = FloatPeaks.peaks

    def recording_peaks(self, graph, samples, axes, *, reader=None):
        asked.append(reader.__self__.name)  # the pass asking
        found = peaks(self, graph, samples, axes, reader=reader)
        assert set(found) == set(axes) and axes  # every tensor asked has channels here
        return found

    monkeypatch.setattr(FloatPeaks, "peaks", recording_peaks)
    result = qtool.quantize(tmp_path / "decoder.onnx", "onnxruntime", tmp_path / "calib.npz",
                            output=tmp_path / "q.onnx", accuracy={"channel_split": {"share_run": share_run}})
    split = next(run for run in result.pass_runs if run.name == "ChannelSplit")
    assert not split.modified and split.details["split"] == [] and "StartOver" not in [run.name for run in result.pass_runs]
    if share_run:
        assert asked == ["OutlierOutputs", "SensitivityFallback"] and peak_sessions == []
        assert split.details["decided_on"] == "calibration's float run"
        return
    assert asked == ["ChannelSplit", "OutlierOutputs", "SensitivityFallback"]
    (session,) = peak_sessions  # one float session for the three passes (one each before)
    assert session.session_runs == 2  # one sample sizes the runs, then the 16 samples run at once


def _scaled_matmul(path) -> qtool.ir.Graph:
    """m = x * 0.5 feeds y = m @ W alone (ChannelSplit folds its division into the 0.5); z = Relu(x) is untouched."""
    weight = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "half"], ["m"], name="scale"),
             helper.make_node("MatMul", ["m", "w"], ["y"], name="layer"),
             helper.make_node("Relu", ["x"], ["z"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 16])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                               numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return qtool.load(path)


def test_a_peak_is_not_served_for_a_tensor_channel_split_changed(tmp_path, peak_sessions):
    graph = _scaled_matmul(tmp_path / "scaled.onnx")
    x = np.random.default_rng(0).standard_normal((8, 4, 16)).astype(np.float32)
    x[..., 0] *= 40.0  # an outlier input channel
    data = [{"x": x}]
    later = {"m": -1, "y": -1, "z": -1}  # what a later pass will ask
    before = channel_peaks(graph, data, later)
    peak_sessions.clear()
    float_peaks = FloatPeaks(data)
    float_peaks.add_reader(16, lambda g: later)
    split = ChannelSplit(data, op_types=["MatMul"], max_growth=1.0, max_error_ratio=1.0, float_peaks=float_peaks)
    weight = weakref.ref(graph.variables["w"].value)
    assert split.call(graph).details["split"][0]["by"] == "Mul scale"  # m's channel 0 now divided
    gc.collect()
    assert weight() is None  # the replaced weight is not kept alive by the memo
    (first,) = peak_sessions  # ChannelSplit's run also computed the later reader's tensors
    assert sorted(first.computed) == ["m", "y", "z"]

    after = float_peaks.peaks(graph, 16, later)
    assert len(peak_sessions) == 2 and peak_sessions[1].computed == ["m", "y"]  # changed: computed again
    fresh = channel_peaks(graph, take_samples(graph, data, 16), later)
    for name in later:
        np.testing.assert_array_equal(after[name], fresh[name])
    np.testing.assert_array_equal(after["z"], before["z"])  # untouched: served from the memo
    assert after["m"][0] < before["m"][0] / 2  # the split channel's peak, not the one before the split


@pytest.mark.parametrize("batch_size", [16, 5])
def test_calibrations_float_run_serves_the_peaks_asked_after_it(tmp_path, monkeypatch, peak_sessions, batch_size):
    """ChannelSplit decides from calibration's float run (it asks for nothing) and splits the decoder's outlier
    channels: the passes start over, and OutlierOutputs and the fallback ask for peaks of changed tensors, which
    calibration's float run of the split graph computes (no run of their own), equal to those a run of their own
    gives. Batches of 5 samples are cut where the first 16 end (5, 5, 5, 1, 4), so they serve them too."""
    onnx.save(tiny_decoder_proto(layers=2, outliers=4), tmp_path / "decoder.onnx")
    ids = np.random.default_rng(0).integers(0, 256, (20, 32)).astype(np.int64)
    asked = {}
    peaks = FloatPeaks.peaks

    def checking_peaks(self, graph, samples, axes, *, reader=None):
        before = len(peak_sessions)
        found = peaks(self, graph, samples, axes, reader=reader)
        runs = len(peak_sessions) - before
        asked[reader.__self__.name] = (runs, found, channel_peaks(graph, take_samples(graph, self.data, samples), axes))
        return found

    monkeypatch.setattr(FloatPeaks, "peaks", checking_peaks)
    result = qtool.quantize(tmp_path / "decoder.onnx", "onnxruntime", {"input_ids": ids}, output=tmp_path / "q.onnx",
                            config={"calibration": {"batch_size": batch_size}})
    assert next(run for run in result.pass_runs if run.name == "ChannelSplit").modified
    names = [run.name for run in result.pass_runs]
    assert names[names.index("StartOver") + 1] == "ChannelSplit"  # the passes start over from the pass that asked
    runs = {name: runs for name, (runs, _, _) in asked.items()}
    assert "ChannelSplit" not in runs and runs.pop("OutlierOutputs") == 0
    assert set(runs.values()) <= {0}  # the fallback's scan, where it asks
    for name, (_, found, reference) in asked.items():
        assert found.keys() == reference.keys() and found, name
        for tensor in found:
            np.testing.assert_array_equal(found[tensor], reference[tensor], err_msg=f"{name} {tensor}")
