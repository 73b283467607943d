"""``qtool quantize`` and ``qtool explain`` from the command line: the seed scenario, errors, reports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import numpy_helper
from pipeline_kit import TINY, run_model
from qtool.cli.main import main

SEED_CONFIG = """\
    [activation]
    symmetric = false
    quant_min = -128
    quant_max = 127

    [weight]
    symmetric = true
    granularity = "per_channel"

    [bias]
    mode = "int32"

    [fusion]
    remove_activations = false
    """


def qtool_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtool.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_seed_scenario_from_a_config_file_runs_in_onnxruntime(cnn_model, calib_npz, tmp_path):
    config = tmp_path / "seed.toml"
    config.write_text(textwrap.dedent(SEED_CONFIG))
    output = tmp_path / "seed.onnx"

    done = qtool_cli("quantize", cnn_model, "--platform", "onnxruntime", "--calib", calib_npz, "--config", config,
                     "-o", output)

    assert done.returncode == 0, done.stderr
    assert "RuntimeCalibration" in done.stderr and f"wrote {output}" in " ".join(done.stdout.split())
    model = onnx.load(output)
    types = [n.op_type for n in model.graph.node]
    assert types.count("Relu") == 2 and "BatchNormalization" not in types
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    stored = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    biases = [n for n in stored if inits[n.input[0]].dtype == np.int32]
    weights = [n for n in stored if inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim > 1]
    assert len(biases) == 3 and len(weights) == 3  # conv1 (with the BatchNorm folded in), conv2, fc
    for node in weights:  # symmetric, per output channel
        assert inits[node.input[1]].shape == (inits[node.input[0]].shape[0],) and not inits[node.input[2]].any()
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(z.dtype == np.int8 for z in zero_points) and any(z != 0 for z in zero_points)  # int8 asymmetric
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    reference, quantized = run_model(cnn_model, x), run_model(output, x)
    assert np.linalg.norm(quantized - reference) < 0.05 * np.linalg.norm(reference)


def test_bad_config_exits_1_naming_the_key_and_writes_nothing(cnn_model, calib_npz, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[activation]\nsymetric = false\n")
    output = tmp_path / "never.onnx"

    code = main(["quantize", str(cnn_model), "--platform", "onnxruntime", "--calib", str(calib_npz),
                 "--config", str(config), "-o", str(output)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"qtool: error: {config}: activation.symetric: unknown key" in err
    assert not output.exists() and list(tmp_path.iterdir()) == [config]


def test_unknown_platform_exits_1_listing_the_installed_ones(cnn_model, calib_npz, tmp_path, capsys):
    code = main(["quantize", str(cnn_model), "--platform", "no-such-target", "--calib", str(calib_npz),
                 "-o", str(tmp_path / "x.onnx")])

    err = capsys.readouterr().err
    assert code == 1
    assert "unknown platform 'no-such-target' (known: " in err and "onnxruntime" in err


def test_quantize_explain_prints_the_table_and_the_summary(tiny_platform, cnn_model, calib_npz, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    code = main(["quantize", str(cnn_model), "--platform", TINY, "--calib", str(calib_npz), "-o",
                 str(tmp_path / "o.onnx"), "--explain", "--check-agreement"])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "qtool explain: tiny-test" in out and "fused with" in out and "shares" in out
    assert "bias: int32" in out  # the resolved configuration above the table
    assert "7 of 11 ops quantized, 4 kept float" in out and "shape/index computation" in out  # an Unsqueeze of a
    # constant is folded
    assert "passes: 9 in" in out and "agreement: samples 4" in out


def test_the_summary_says_how_many_samples_calibration_read(tiny_platform, cnn_model, calib_npz, tmp_path, capsys):
    """Only the progress bar said it, on a terminal: a piped run with --calib-samples 100 never confirmed it."""
    argv = ["quantize", str(cnn_model), "--platform", TINY, "--calib", str(calib_npz), "-o", str(tmp_path / "o.onnx")]
    assert main(argv) == 0
    assert "calibrated on 32 samples\n" in capsys.readouterr().out
    assert main([*argv, "--calib-samples", "20"]) == 0
    assert "calibrated on 20 samples (the first of the data: --calib-samples)" in capsys.readouterr().out


def test_allowed_errors_are_shown_as_warnings(tiny_platform, cnn_model, calib_npz, tmp_path, capsys):
    tiny_platform.refuse = ("MaxPool",)
    argv = ["quantize", str(cnn_model), "--platform", TINY, "--calib", str(calib_npz), "-o", str(tmp_path / "o.onnx")]

    assert main(argv) == 1
    assert "tiny.refused" in capsys.readouterr().err and not (tmp_path / "o.onnx").exists()
    assert main([*argv, "--allow-unsupported"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 errors, exported anyway as allowed" in out and "[tiny.refused]" in out


def test_state_round_trip_through_the_cli(tiny_platform, cnn_model, calib_npz, tmp_path):
    state, first, second = tmp_path / "s.json", tmp_path / "a.onnx", tmp_path / "b.onnx"
    common = [str(cnn_model), "--platform", TINY]

    assert main(["quantize", *common, "--calib", str(calib_npz), "-o", str(first), "--save-state", str(state)]) == 0
    assert main(["quantize", *common, "--load-state", str(state), "-o", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_an_unknown_calibration_layout_is_a_usage_error(cnn_model, calib_npz, tmp_path, capsys):
    """--calib-layout sample exited 1 with a line that named no flag; it is argparse's usage error (exit 2), as a
    bad --calib-samples is."""
    with pytest.raises(SystemExit) as exited:
        main(["quantize", str(cnn_model), "--platform", "onnxruntime", "--calib", str(calib_npz), "--calib-layout",
              "sample", "-o", str(tmp_path / "q.onnx")])
    assert exited.value.code == 2 and "argument --calib-layout: invalid choice: 'sample'" in capsys.readouterr().err


def test_flags_of_the_data_without_data_are_refused(tiny_platform, cnn_model, calib_npz, tmp_path, capsys):
    """With --load-state and no --calib, --calib-samples and the other flags of the data were ignored without a word."""
    state = tmp_path / "s.json"
    assert main(["quantize", str(cnn_model), "--platform", TINY, "--calib", str(calib_npz), "-o",
                 str(tmp_path / "a.onnx"), "--save-state", str(state)]) == 0
    capsys.readouterr()
    for flag in (["--calib-samples", "4"], ["--calib-skip-nonfinite"], ["--calib-layout", "feeds"]):
        assert main(["quantize", str(cnn_model), "--platform", TINY, "--load-state", str(state), "-o",
                     str(tmp_path / "q.onnx"), *flag]) == 1
        assert capsys.readouterr().err == f"qtool: error: {flag[0]} shape(s) the calibration data, and no --calib " \
                                          "was given\n"
    assert not (tmp_path / "q.onnx").exists()


def test_explain_json_needs_no_data(tiny_platform, cnn_model, capsys):
    assert main(["explain", str(cnn_model), "--platform", TINY, "--json"]) == 0

    document = json.loads(capsys.readouterr().out)
    ops = {op["op_type"]: op for op in document["ops"]}
    assert document["schema_version"] == 1 and document["platform"] == TINY
    assert document["config"]["activation"]["quant_min"] == -128  # the tiny platform's default
    conv_out = next(op for op in document["ops"] if op["op_type"] == "Conv")["outputs"][0]
    assert conv_out["state"] == "fp32" and conv_out["note"].startswith("fused with")
    assert ops["MaxPool"]["inputs"][0]["shares"].endswith(f"({ops['MaxPool']['inputs'][0]['tensor']})")
    assert ops["Shape"]["reason"] == "shape/index computation" and not ops["Shape"]["quantized"]
    # an integer tensor is labelled so, not 'float' (a Shape output, int64 ids: found by a user-style probe)
    assert ops["Shape"]["outputs"][0]["state"] == "integer" and ops["Shape"]["inputs"][0]["state"] == "float"
    assert all(t.get("state") in ("initial", "overlapped", "fp32", "passive_init", "float", "integer")
               for op in document["ops"] for t in op["inputs"] + op["outputs"])


def test_explain_names_the_overrides_that_set_a_tensors_scheme(tiny_platform, cnn_model, tmp_path, capsys,
                                                               monkeypatch):
    """Mixed precision by overrides showed each tensor's scheme but not which override gave it."""
    conv = next(op.name for op in qtool.load(cnn_model).topological_order() if op.op_type == "Conv")
    config = tmp_path / "mixed.toml"
    config.write_text(f'[[override]]\nop_type = "Conv"\nweight = {{ bits = 4 }}\n\n'
                      f'[[override]]\nop_name = "{conv}"\nweight = {{ bits = 6 }}\nactivation = {{ bits = 16 }}\n')
    assert main(["explain", str(cnn_model), "--platform", TINY, "--config", str(config), "--json"]) == 0

    ops = {op["name"]: op for op in json.loads(capsys.readouterr().out)["ops"]}
    first = {t["role"]: t for t in ops[conv]["inputs"] if t["scheme"] is not None}
    assert first["weight"]["set_by"] == [f"{config}: override[0]", f"{config}: override[1]"]
    assert first["activation"]["set_by"] == [f"{config}: override[1]"]
    others = [t for name, op in ops.items() if op["op_type"] == "Conv" and name != conv for t in op["inputs"]]
    assert {tuple(t.get("set_by", ())) for t in others if t.get("role") == "weight"} == {(f"{config}: override[0]",)}
    assert not [t for op in ops.values() if op["op_type"] != "Conv" for t in op["inputs"] if "set_by" in t]
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["explain", str(cnn_model), "--platform", TINY, "--config", str(config)]) == 0
    assert f"set by {config}: override[0], {config}: override[1]" in " ".join(capsys.readouterr().out.split())


def test_explain_labels_integer_tensors_by_their_type(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32), "table")
    weight = numpy_helper.from_array(np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["h"], name="embed"),
         helper.make_node("Shape", ["ids"], ["n"], name="shape"),
         helper.make_node("MatMul", ["h", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["s", 8]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1])], initializer=[table, weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert main(["explain", str(tmp_path / "m.onnx"), "--platform", "onnxruntime", "--preset", "int4-weight-only",
                 "--json"]) == 0
    ops = {op["name"]: op for op in json.loads(capsys.readouterr().out)["ops"]}
    assert ops["embed"]["inputs"][1] == {"tensor": "ids", "scheme": None, "state": "integer", "dtype": "int64"}
    assert ops["shape"]["outputs"][0]["state"] == "integer" and ops["embed"]["outputs"][0]["state"] == "float"
    assert main(["explain", str(tmp_path / "m.onnx"), "--platform", "onnxruntime", "--preset", "int4-weight-only"]) == 0
    out = capsys.readouterr().out
    assert "ids: int64" in out and "ids: float" not in out


def test_explain_says_what_strings_sequences_and_maps_are(tmp_path, capsys):
    """A classifier's string labels and ZipMap (skl2onnx's output) read as what they are, not as float."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    probabilities = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="dense"),
         helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
         helper.make_node("ArgMax", ["prob"], ["label"], name="argmax", axis=1, keepdims=0),
         helper.make_node("Cast", ["label"], ["label_text"], name="to_text", to=TensorProto.STRING),
         helper.make_node("ZipMap", ["prob"], ["probabilities"], name="zipmap", domain="ai.onnx.ml",
                          classlabels_int64s=[0, 1, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("label_text", TensorProto.STRING, ["n"]),
         helper.make_value_info("probabilities", probabilities)], initializer=[weight])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "m.onnx")
    assert main(["explain", str(tmp_path / "m.onnx"), "--platform", "onnxruntime", "--json"]) == 0
    ops = {op["name"]: op for op in json.loads(capsys.readouterr().out)["ops"]}
    assert ops["zipmap"]["outputs"][0] == {"tensor": "probabilities", "scheme": None, "state": "other",
                                           "type": "seq(map(int64,tensor(float)))"}
    assert ops["to_text"]["outputs"][0] == {"tensor": "label_text", "scheme": None, "state": "other",
                                            "type": "tensor(string)"}
    assert ops["argmax"]["outputs"][0]["state"] == "integer" and ops["softmax"]["outputs"][0]["state"] == "float"
    assert main(["explain", str(tmp_path / "m.onnx"), "--platform", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "probabilities: seq(map(int64,tensor(float)))" in out and "label_text: tensor(string)" in out


@pytest.mark.parametrize("flag", ["--remove-activations", "--keep-activations"])
def test_activation_flags_reach_the_export_options(tiny_platform, cnn_model, calib_npz, tmp_path, flag, monkeypatch):
    seen = []
    original = tiny_platform.export

    def export(self, graph, output, options):
        seen.append(options.remove_activations)
        return original(self, graph, output, options)

    monkeypatch.setattr(tiny_platform, "export", export)
    argv = ["quantize", str(cnn_model), "--platform", TINY, "--calib", str(calib_npz), "-o", str(tmp_path / "o.onnx")]

    assert main([*argv, flag]) == 0
    assert seen == [flag == "--remove-activations"]


@pytest.mark.parametrize("value, external", [("true", True), ("False", False)])
def test_export_option_external_data(digits, tmp_path, value, external):
    model, calib, split = digits
    out = tmp_path / "model.onnx"
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o", str(out),
                 "--export-option", f"external_data={value}"]) == 0
    assert out.with_name("model.onnx.data").exists() is external
    stored = {t.name for t in onnx.load(out, load_external_data=False).graph.initializer
              if t.data_location == onnx.TensorProto.EXTERNAL}
    assert bool(stored) is external
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: split.eval_x[:2]})[0].shape[0] == 2


def test_an_export_without_external_data_removes_the_data_file_an_earlier_one_left(digits, tmp_path):
    """model.onnx.data stayed beside a model.onnx that no longer read it."""
    model, calib, _ = digits
    out = tmp_path / "model.onnx"
    for value in ("true", "false"):
        assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o", str(out),
                     "--export-option", f"external_data={value}"]) == 0
        assert out.with_name("model.onnx.data").exists() is (value == "true")


@pytest.mark.parametrize("pair, message", [
    ("tensorrt_version=8.6", "export option 'tensorrt_version': platform 'onnxruntime' does not read it "
                             "(its options: external_data, weight_only_format, accuracy_level)"),
    ("external_data=no", "export option 'external_data': expected true or false, got 'no'"),
])
def test_bad_export_options_fail_before_any_work(cnn_model, calib_npz, tmp_path, pair, message):
    out = tmp_path / "model.onnx"
    done = qtool_cli("quantize", cnn_model, "--platform", "onnxruntime", "--calib", calib_npz, "-o", out,
                     "--export-option", pair)
    assert done.returncode != 0 and not out.exists()
    assert message in " ".join(done.stderr.split())


@pytest.mark.parametrize("flags", [["--by-blocks", "0"], ["--by-blocks", "1"]], ids=["bad-size", "missing-model"])
def test_by_blocks_checks_its_inputs_before_torch_is_imported(tmp_path, flags):
    """--by-blocks' input errors took 1.6-2.7 s (torch imported first) where quantize's take 0.3 s (a probe's
    finding)."""
    import subprocess
    import sys

    script = ("import sys; from qtool.cli.main import main; "
              f"code = main(['quantize', {str(tmp_path / 'nope.onnx')!r}, '--platform', 'onnxruntime', '--calib', "
              f"'x.npz', '-o', {str(tmp_path / 'q.onnx')!r}, *{flags!r}]); print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"], (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "error" in done.stderr
