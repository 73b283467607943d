"""What the platform refuses in the plan itself (schemes, opsets) is refused before calibration reads any data, and
`qtool explain` shows it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import qtool
from qtool.cli.main import main
from qtool.pipeline import UnsupportedModelError

ASYMMETRIC = {"activation": {"symmetric": False}}  # TensorRT takes symmetric int8 ranges only


def test_a_scheme_the_platform_refuses_stops_the_run_before_calibration_reads_the_data(cnn_model, tmp_path):
    """It was refused only after calibration (seconds on a real data set), and explain said nothing."""
    pulled = []
    samples = (pulled.append(i) or {"x": np.full((1, 3, 8, 8), i, np.float32)} for i in range(32))
    output = tmp_path / "out.onnx"
    with pytest.raises(UnsupportedModelError, match=r"tensorrt cannot run the quantized model \(\d+ error\(s\), "
                                                     r"found before calibration\): error \[trt.activation-scheme\]"):
        qtool.quantize(cnn_model, "tensorrt", samples, config=ASYMMETRIC, output=output)
    assert pulled == [0]  # the first item, read when the data is checked; calibration read none
    assert not output.exists()
    allowed = qtool.quantize(cnn_model, "tensorrt", np.ones((4, 3, 8, 8), np.float32), config=ASYMMETRIC,
                             allow_unsupported=True)
    assert any(d.code == "trt.activation-scheme" for d in allowed.diagnostics)  # allowed: the run goes on


def test_explain_shows_what_the_platform_finds_in_the_plan(cnn_model, tmp_path, capsys):
    config = tmp_path / "asym.toml"
    config.write_text("[activation]\nsymmetric = false\n")
    assert main(["explain", str(cnn_model), "--platform", "tensorrt", "--config", str(config)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert re.search(r"tensorrt on this plan, before calibration: \d+ error\(s\), which quantize refuses", printed)
    assert "error [trt.activation-scheme]" in printed
    assert main(["explain", str(cnn_model), "--platform", "tensorrt", "--config", str(config), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["diagnostics"]
    assert found and {d["code"] for d in found} == {"trt.activation-scheme"}
    assert qtool.explain(cnn_model, "tensorrt").document["diagnostics"] == []


def test_what_a_fallback_may_return_to_float_is_left_to_the_final_validation(cnn_model):
    """A reviewer's case: the fallback returned the one asymmetric op to float and the model was written; the
    plan's refusal stopped it before calibration."""
    pulled = []
    samples = (pulled.append(i) or {"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}
               for i in range(16))
    config = {**ASYMMETRIC, "accuracy": {"fallback": {"min_snr_db": 60}}}
    try:
        qtool.quantize(cnn_model, "tensorrt", samples, config=config)
    except UnsupportedModelError as refusal:
        assert "found before calibration" not in str(refusal)  # what is left after the fallback, if anything
    assert len(pulled) == 16  # calibration ran


def test_the_refusal_names_the_configuration_keys_that_asked_for_the_schemes(cnn_model, tmp_path):
    """The refusal named ops and tensors only; a user who wrote the scheme in one key of a file had to find it."""
    config = tmp_path / "asym.toml"
    config.write_text("[activation]\nsymmetric = false\n")
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(cnn_model, "tensorrt", np.ones((4, 3, 8, 8), np.float32), config=config)
    assert str(refused.value).startswith(f"{config}: activation.symmetric: tensorrt cannot run the quantized model")

    first = next(op.name for op in qtool.load(cnn_model).topological_order() if op.op_type == "Conv")
    config.write_text(f'[[override]]\nop_name = "{first}"\nactivation = {{ symmetric = false }}\n')
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(cnn_model, "tensorrt", np.ones((4, 3, 8, 8), np.float32), config=config)
    assert str(refused.value).startswith(f"{config}: override[0].activation.symmetric: tensorrt cannot run")


def test_a_refusal_after_calibration_names_the_keys_too(cnn_model, tmp_path):
    """Errors on ops a fallback may return to float are left to the final validation, which named no key."""
    config = tmp_path / "asym.toml"
    config.write_text("[activation]\nsymmetric = false\n[accuracy]\nfallback = { min_snr_db = 0 }\n")
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(cnn_model, "tensorrt", np.ones((4, 3, 8, 8), np.float32), config=config)
    assert "found before calibration" not in str(refused.value)
    assert str(refused.value).startswith(f"{config}: activation.symmetric: tensorrt cannot run the quantized model")


def test_a_fallback_that_may_change_no_op_of_the_model_rescues_nothing(tmp_path):
    """onnxruntime's default fallback changes at most a tenth of the compute ops (none of a model of fewer than ten):
    an error on a Gemm it could never return to float waited until after calibration."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 16)), ("w2", (16, 4)))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], initializer=weights)
    model = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    pulled = []
    samples = (pulled.append(i) or {"x": rng.standard_normal((1, 16)).astype(np.float32)} for i in range(16))
    config = tmp_path / "a2.toml"
    config.write_text("[activation]\nbits = 2\n")
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(model, "onnxruntime", samples, config=config)
    assert "found before calibration" in str(refused.value) and str(refused.value).startswith(f"{config}: ")
    assert len(pulled) <= 1  # the first feed may be read for the model's inputs, the calibration data not


def test_a_reason_found_at_several_places_is_listed_once(cnn_model, tmp_path):
    """4-bit activations on a CNN repeated one reason for every Conv of it (about 1500 characters for five)."""
    config = tmp_path / "a4.toml"
    config.write_text("[activation]\nbits = 4\n")
    with pytest.raises(UnsupportedModelError) as refused:
        qtool.quantize(cnn_model, "onnxruntime", np.ones((4, 3, 8, 8), np.float32), config=config)
    message = str(refused.value)
    fused = "fuse the Conv into QLinearConv, which takes 8-bit types only"
    assert message.count(fused) == 1
    assert re.search(r"error \[ort\.kernel-type\] at 2 places \(op '[^']*Conv', tensor '[^']*'; op '[^']*Conv', "
                     r"tensor", message)
