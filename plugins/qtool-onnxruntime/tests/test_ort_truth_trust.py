"""Diagnostics that ORT's real sessions confirm: a MaxPool between 4/2-bit pairs fails to load (ERROR), a Gemm
whose output stays float with a float bias runs as a float Gemm (PERFORMANCE), and a runtime refusal that the
rules missed fails the run."""

import dataclasses

import numpy as np
import onnx
import pytest
import qtool
from ort_testkit import optimized_ops
from qtool.pipeline import RuntimeRefusedError, UnsupportedModelError
from qtool.platform import PLATFORMS
from qtool.plugins import plugin_manager
from qtool.testing.models import calibration_file, pooled_model_proto, small_model
from qtool_onnxruntime import OnnxRuntimePlatform
from qtool_onnxruntime.session import ORT_ERRORS, cpu_session


def pool_model(folder):
    """qtool.testing's Conv -> MaxPool -> Flatten -> Gemm and 8 samples; the tensors around the MaxPool can be
    given their own scheme."""
    path = folder / "pool.onnx"
    onnx.save_model(pooled_model_proto(), path)
    np.savez(folder / "calib.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    return path, folder / "calib.npz"


def around_the_pool(folder, bits: int):
    path = folder / f"a{bits}.toml"
    path.write_text("".join(f'[[override]]\ntensor = "{t}"\nactivation = {{ bits = {bits} }}\n'
                            for t in ("c1", "mp", "fl")))
    return path


def loads(path) -> bool:
    try:
        cpu_session(path)
    except ORT_ERRORS:
        return False
    return True


@pytest.mark.parametrize("bits", [4, 2])
def test_maxpool_between_narrow_pairs_is_an_error_because_ort_refuses_it(bits, tmp_path):
    model, calib = pool_model(tmp_path)
    config = around_the_pool(tmp_path, bits)
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(model, "onnxruntime", calib, config=config, output=tmp_path / "q.onnx")
    errors = [d for d in refused.value.diagnostics if d.severity is qtool.Severity.ERROR]
    assert [(d.code, d.op) for d in errors] == [("ort.kernel-type", "pool")]
    result = qtool.quantize(model, "onnxruntime", calib, config=config, output=tmp_path / "q.onnx",
                            allow_unsupported=True)
    assert not loads(result.files[0])  # ORT's truth, at its default optimization level
    assert "skipped" in result.agreement  # nothing used the simulation; the runtime's refusal is still reported:
    assert "MaxPool" in result.summary["float_vs_quantized"]["runtime_error"]


def test_maxpool_between_8_bit_pairs_is_fine(tmp_path):
    model, calib = pool_model(tmp_path)
    result = qtool.quantize(model, "onnxruntime", calib, config=around_the_pool(tmp_path, 8),
                            output=tmp_path / "q.onnx")
    assert not [d for d in result.diagnostics if d.op == "pool"]
    assert loads(result.files[0])


@pytest.mark.parametrize("platform, runs_float", [("onnxruntime", True), ("onnxruntime-int32bias", False)])
def test_a_gemm_with_float_output_and_float_bias_is_noted_and_runs_float(platform, runs_float, tmp_path):
    model = small_model(tmp_path / "m.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "c.npz")
    config = tmp_path / "c.toml"
    config.write_text('[[override]]\ntensor = "output"\nactivation = "float"\n')
    result = qtool.quantize(model, platform, calib, config=config, output=tmp_path / "q.onnx")
    noted = [d for d in result.diagnostics if d.op == "fc" and d.code == "ort.perf.float-output"]
    assert bool(noted) == runs_float
    assert all(d.severity is qtool.Severity.PERFORMANCE for d in noted)
    ops = optimized_ops(result.files[0], tmp_path)
    assert ("Gemm" in ops and "QGemm" not in ops) == runs_float


class Unchecked(OnnxRuntimePlatform):
    """ORT's export without its rules: what a platform whose diagnostics miss a refusal looks like."""

    name = "onnxruntime-unchecked"

    def validate(self, graph, options=None):
        return []

    def export(self, graph, output, options):
        return super().export(graph, output, dataclasses.replace(options, allow_unsupported=True))


class _Registration:
    @qtool.hookimpl
    def qtool_register_platforms(self, register):
        register(Unchecked)


@pytest.mark.parametrize("check_agreement", [None, True])  # found by float_vs_quantized, or by the agreement check
def test_a_model_the_runtime_refuses_fails_the_run_even_when_the_rules_missed_it(tmp_path, check_agreement):
    manager = plugin_manager().manager
    plugin = _Registration()
    manager.register(plugin, name="unchecked-ort")
    PLATFORMS.clear()
    try:
        model, calib = pool_model(tmp_path)
        with pytest.raises(RuntimeRefusedError, match=r"q.onnx: onnxruntime .* cannot run the written model"):
            qtool.quantize(model, "onnxruntime-unchecked", calib, config=around_the_pool(tmp_path, 4),
                           output=tmp_path / "q.onnx", check_agreement=check_agreement)
    finally:
        manager.unregister(plugin)
        PLATFORMS.clear()
