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


def _single_gemm_or_matmul(folder, node, x_shape, y_shape, params: dict, extra_nodes=()):
    helper = onnx.helper
    graph = helper.make_graph(
        [*extra_nodes, node, helper.make_node("Relu", ["h"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_shape)],
        [onnx.numpy_helper.from_array(value, name) for name, value in params.items()])
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rng = np.random.default_rng(0)
    return path, [{"x": rng.standard_normal(x_shape).astype(np.float32)} for _ in range(4)]


@pytest.mark.parametrize("bias_computed", [False, True])
def test_a_gemm_with_alpha_and_a_bias_runs_as_qgemm_only_once_alpha_is_folded(bias_computed, tmp_path):
    """GraphSimplify folds alpha and beta into a constant weight and bias; a computed bias keeps them, and ORT runs
    that Gemm in float, which ``ort.perf.gemm-scale`` says."""
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)}
    extra = [onnx.helper.make_node("Slice", ["x", "zero", "eight", "one"], ["c"], name="computed_bias")]
    if bias_computed:
        params.update(zero=np.array([0]), eight=np.array([8]), one=np.array([1]))
    node = onnx.helper.make_node("Gemm", ["x", "w", "c" if bias_computed else "b"], ["h"], name="fc", alpha=0.5,
                                 beta=2.0)
    model, feeds = _single_gemm_or_matmul(tmp_path, node, [4, 16], [4, 8], params, extra if bias_computed else ())
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")
    noted = [d for d in result.diagnostics if d.op == "fc" and d.code == "ort.perf.gemm-scale"]
    assert bool(noted) == bias_computed and all(d.severity is qtool.Severity.PERFORMANCE for d in noted)
    ops = optimized_ops(result.files[0], tmp_path)
    assert ("QGemm" in ops) != bias_computed


@pytest.mark.parametrize("granularity, runs_float", [("per_channel", True), ("per_tensor", False), (None, False)])
def test_a_matmul_weight_of_three_dimensions_is_an_integer_kernel_only_per_tensor(granularity, runs_float, tmp_path):
    """Asked per channel, such a weight stays so and ORT runs a float MatMul (noted); by default the platform
    quantizes it per tensor (its reason says why), and ORT runs QLinearMatMul."""
    weight = np.random.default_rng(2).standard_normal((3, 16, 8)).astype(np.float32)
    node = onnx.helper.make_node("MatMul", ["x", "w"], ["h"], name="bmm")
    model, feeds = _single_gemm_or_matmul(tmp_path, node, [3, 5, 16], [3, 5, 8], {"w": weight})
    config = {"weight": {"granularity": granularity}} if granularity else None
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx",
                            config=config)
    noted = [d for d in result.diagnostics if d.op == "bmm" and d.code == "ort.perf.granularity"]
    assert bool(noted) == runs_float
    ops = optimized_ops(result.files[0], tmp_path)
    assert ("MatMul" in ops and "QLinearMatMul" not in ops) == runs_float
    bmm = result.graph.operations["bmm"].quant
    assert bmm.inputs[1].scheme.is_per_channel == (granularity == "per_channel")
    assert ("3-D weight 'w' per tensor" in bmm.reason) == (granularity is None)


def test_a_gemm_with_a_computed_bias_runs_float_and_says_so(tmp_path):
    """torch.addmm's Gemm (A, B and C graph inputs; onnx's own pytorch-operator/test_operator_addmm): C is
    quantized as an activation, read through its uint8 DequantizeLinear, and ORT fuses QGemm only with an int32
    bias. Validation called it QGemm and warned of a bias 'written as float values on its grid', which it is not."""
    node = onnx.helper.make_node("Gemm", ["x", "w", "c"], ["h"], name="fc")
    rng = np.random.default_rng(5)
    helper = onnx.helper
    graph = helper.make_graph([node], "addmm", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16]),
                                                helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [16, 8]),
                                                helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, [4, 8])])
    model = tmp_path / "addmm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32), "w": rng.standard_normal((16, 8)).astype(
        np.float32), "c": rng.standard_normal(8).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")
    codes = {d.code for d in result.diagnostics if d.op == "fc"}
    assert "ort.bias-float" not in codes and "ort.perf.bias" in codes
    ops = optimized_ops(result.files[0], tmp_path)
    assert "QGemm" not in ops and "Gemm" in ops
