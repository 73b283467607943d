"""The fallback's ``enough_snr_db`` gate measured on the platform's runtime: where the calibrated graph's output SNR
there reaches it, nothing is ranked or simulated; below it, or without a runtime, the fallback runs as it did."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import qtool
import torch
from accuracy_helpers import export
from qtool.analysis.float_gap import FLOAT_GAP_SAMPLES, Deployed, float_gap
from qtool.calibration import load_calibration_data, ort_engine
from qtool.cli.quantize import fallback_lines
from qtool.passes.accuracy.runtime_gate import runtime_snr_db
from qtool.platform import ExportOptions, Platform, RuntimeUnavailable
from qtool.platform_runtime import PlatformRuntime
from qtool_onnxruntime.platform import OnnxRuntimePlatform
from test_accuracy_outlier_fallback import DOWN, FeedForward, _asking


class NoRuntimePlatform(OnnxRuntimePlatform):
    """The onnxruntime platform, as a platform that cannot run its files here (Platform.run's default)."""

    name = "onnxruntime-elsewhere"

    def run(self, paths, samples, names):
        return Platform.run(self, paths, samples, names)


def _fallback(tmp_path, platform, calib, name: str, enough: float):
    """The FeedForward model with an outlier channel (about 18 dB all-int8), quantized with the default fallback
    asked to act (half the compute ops) and ``enough`` as enough_snr_db: the fallback's run and the export."""
    model = tmp_path / "ffn.onnx"
    if not model.exists():
        export(FeedForward(40.0), torch.zeros(1, 8, 16), model)
    output = tmp_path / f"{name}.onnx"
    result = qtool.quantize(str(model), platform, calib, output=output,
                            accuracy=_asking(0.5, enough_snr_db=enough))
    return result, next(r for r in result.pass_runs if r.name == "SensitivityFallback"), output.read_bytes()


def test_enough_on_the_runtime_ranks_nothing_and_says_so(tmp_path, calib):
    result, run, _ = _fallback(tmp_path, "onnxruntime", calib, "gated", 15.0)
    details = run.details
    assert details["runtime"] == "onnxruntime" and 15.0 <= details["runtime_snr_db"] < 25.0
    assert details["before"] == details["after"] == details["runtime_snr_db"] and details["met"]
    assert "measured on onnxruntime >= enough_snr_db 15" in details["budget"]
    # nothing simulated: no SNR with the candidates float, no trial
    assert "widened_snr_db" not in details and details["tried"] == {}
    assert details["changed"] == [] and not run.modified and result.graph.operations[DOWN].quant.quantized
    assert run.report.runtime_snr_db == details["runtime_snr_db"] and run.report.runtime == "onnxruntime"
    assert fallback_lines(result.pass_runs) == [
        f"sensitivity fallback: (output SNR {details['runtime_snr_db']:.4g} dB measured on onnxruntime >= "
        "enough_snr_db 15), nothing changed"]
    # the simulation measures the same graph within a few hundredths of a dB
    _, simulated, _ = _fallback(tmp_path, NoRuntimePlatform(), calib, "simulated", 15.0)
    assert simulated.details["before"] == pytest.approx(details["runtime_snr_db"], abs=0.2)


def test_the_gate_measures_against_the_outputs_calibration_kept(tmp_path, calib, monkeypatch):
    """The float side of the gate is calibration's own run of the first 8 samples (joined in a batch, kept row by
    row and joined back): no float session of its own, and the SNR a fresh float run gives."""
    fresh = []
    float_outputs = ort_engine.float_outputs
    monkeypatch.setattr(ort_engine, "float_outputs", lambda *a, **k: fresh.append(len(a[1])) or float_outputs(*a, **k))
    result, run, _ = _fallback(tmp_path, "onnxruntime", calib, "gated", 15.0)
    assert fresh == [] and 15.0 <= run.details["runtime_snr_db"] < 25.0
    graph = result.graph
    batches = load_calibration_data(calib, graph).take(FLOAT_GAP_SAMPLES)
    measured, runtime = runtime_snr_db(graph, batches, PlatformRuntime(OnnxRuntimePlatform(), ExportOptions()))
    assert len(batches) == 1 and fresh == [1] and runtime == "onnxruntime"  # a fresh run of the batch
    assert run.details["runtime_snr_db"] == pytest.approx(measured, abs=1e-4)


class CountingPlatform(OnnxRuntimePlatform):
    """The onnxruntime platform, counting the samples of each run of its files."""

    name = "onnxruntime-counted"

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []

    def run(self, paths, samples, names):
        self.runs.append(len(samples))
        return super().run(paths, samples, names)


def test_the_summary_reads_the_gates_run_of_the_same_bytes(tmp_path):
    """The written model is byte for byte the one the gate ran, on the same first samples (feeds): the summary's
    float-vs-quantized takes those outputs instead of a session of its own, and measures what a run gives."""
    model = tmp_path / "ffn.onnx"
    export(FeedForward(40.0), torch.zeros(1, 8, 16), model)
    feeds = [{"x": a[None]} for a in np.random.default_rng(0).standard_normal((24, 8, 16)).astype(np.float32)]
    platform = CountingPlatform()
    result = qtool.quantize(str(model), platform, feeds, calib_layout="feeds", output=tmp_path / "q.onnx",
                            accuracy=_asking(0.5, enough_snr_db=15.0))
    gate = next(r for r in result.pass_runs if r.name == "SensitivityFallback").details
    assert gate["runtime_snr_db"] >= 15.0 and platform.runs == [FLOAT_GAP_SAMPLES]  # the gate's run alone
    fresh = OnnxRuntimePlatform()
    measured = float_gap(result.graph, load_calibration_data(feeds, result.graph, layout="feeds"),
                         deployed=Deployed(fresh.runtime(), lambda samples, names: fresh.run(result.files, samples,
                                                                                             names)))
    assert result.summary["float_vs_quantized"]["outputs"] == measured["outputs"]


def test_below_enough_it_runs_as_without_a_runtime(tmp_path, calib):
    _, run, gated = _fallback(tmp_path, "onnxruntime", calib, "gated", 40.0)
    _, plain, ungated = _fallback(tmp_path, NoRuntimePlatform(), calib, "plain", 40.0)
    assert run.details["runtime"] == "onnxruntime" and run.details["runtime_snr_db"] < 40.0
    assert [c["op"] for c in run.details["changed"]] == [DOWN] and run.modified  # the gap budget acts
    runtime_keys = {"runtime", "runtime_snr_db", "after_runtime_db"}  # what the runtime measured
    assert {k: v for k, v in run.details.items() if k not in runtime_keys} == \
        {k: v for k, v in plain.details.items() if k not in runtime_keys}
    assert gated == ungated


def test_without_a_runtime_it_simulates_and_says_why(tmp_path, calib):
    result, run, _ = _fallback(tmp_path, NoRuntimePlatform(), calib, "plain", 15.0)
    details = run.details
    assert details["runtime_snr_db"] is None and "cannot run its files here" in details["runtime"]
    assert details["before"] >= 15.0 and details["met"] and details["tried"] == {0: details["before"]}
    assert DOWN in details["outlier_ratios"] and "widened_snr_db" in details  # ranked candidates, simulated
    assert details["changed"] == [] and result.graph.operations[DOWN].quant.quantized


def test_a_platform_that_cannot_export_is_no_runtime(tmp_path):
    class Unexported(Platform):
        name = "unexported"

        def run(self, paths, samples, names):
            raise AssertionError("ran files it did not export")

    graph = export(FeedForward(None), torch.zeros(1, 8, 16), tmp_path / "f.onnx")
    with pytest.raises(RuntimeUnavailable, match=r"platform 'unexported' cannot run this graph here "
                                                 r"\(NotImplementedError: platform 'unexported' does not export\)"):
        PlatformRuntime(Unexported(), ExportOptions())(graph, [], ["y"])


def test_a_platform_that_runs_nothing_is_not_asked_to_export(tmp_path):
    class Unrunnable(Platform):
        name = "unrunnable"

        def export(self, graph, output, options):
            raise AssertionError("exported although its files cannot run here")

    graph = export(FeedForward(None), torch.zeros(1, 8, 16), tmp_path / "f.onnx")
    with pytest.raises(RuntimeUnavailable, match=r"^platform 'unrunnable' cannot run its files here$"):
        PlatformRuntime(Unrunnable(), ExportOptions())(graph, [], ["y"])


def test_the_registry_imports_no_torch():
    code = ("import sys; from qtool.passes.accuracy import AFTER_CALIBRATION, BEFORE_DISPATCH, accuracy_passes; "
            "assert accuracy_passes({}) == ([], []) and 'fallback' in AFTER_CALIBRATION; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('qtool.passes.accuracy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['qtool.passes.accuracy.options']"
