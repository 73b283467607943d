"""Accuracy passes through qtool.quantize and the CLI flags, on the trained digits CNN with 4-bit weights."""

import numpy as np
import onnxruntime as ort

import qtool
from qtool.cli.main import build_parser
from qtool.cli.quantize import accuracy_flags


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((test - reference) ** 2).sum()))


def run(path, images):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]


def test_accuracy_passes_improve_the_exported_w4a8_model(digits, tmp_path):
    model, calib, split = digits
    reference = run(model, split.eval_x)
    plain = qtool.quantize(model, "onnxruntime", calib, preset="w4a8", output=tmp_path / "plain.onnx",
                           accuracy={"fallback": False})  # every weight 4-bit: the preset's fallback off
    tuned = qtool.quantize(model, "onnxruntime", calib, preset="w4a8", output=tmp_path / "tuned.onnx",
                           accuracy={"fallback": False, "adaround": {"iterations": 150}, "bias_correction": True})
    names = [r.name for r in tuned.pass_runs]
    assert names.index("PassiveParameterQuantize") < names.index("AdaRound") < names.index("BiasCorrection") \
        < names.index("Baking")
    plain_snr, tuned_snr = snr_db(reference, run(plain.files[0], split.eval_x)), snr_db(
        reference, run(tuned.files[0], split.eval_x))
    assert tuned_snr > plain_snr + 1.0, (plain_snr, tuned_snr)
    assert tuned.agreement["max_steps"] <= 1


def test_config_table_and_cli_flags_enable_the_same_passes(digits, tmp_path):
    model, calib, _ = digits
    config = tmp_path / "accuracy.toml"
    config.write_text("[accuracy]\nequalization = true\nfallback = { min_snr_db = 60 }\n")
    result = qtool.quantize(model, "onnxruntime", calib, config=config)
    names = [r.name for r in result.pass_runs]
    assert names[:2] == ["GraphSimplify", "CrossLayerEqualization"] and "SensitivityFallback" in names
    fallback = next(r for r in result.pass_runs if r.name == "SensitivityFallback")
    returned = [op for op in result.graph.operations.values()
                if op.quant is not None and not op.quant.quantized and "sensitivity" in op.quant.reason]
    assert fallback.modified and returned  # 60 dB is out of reach for int8: some ops go back to float

    args = build_parser().parse_args(["quantize", "m.onnx", "--platform", "onnxruntime", "-o", "x.onnx",
                                      "--optimize", "--min-snr", "35"])
    assert accuracy_flags(args) == {"equalization": True, "adaround": True, "fallback": {"min_snr_db": 35.0}}
