"""The command line a script can rely on: JSON, exit codes, no wrapping when piped, fast start, python -m."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import qtool
from qtool.cli.main import main
from qtool.config import resolve_config
from qtool.config.errors import ConfigError
from qtool.testing.models import calibration_file, small_model

WORKTREE_ENV = {**os.environ, "COLUMNS": "80"}


def qtool_process(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "qtool", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, env=WORKTREE_ENV, **kwargs)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    model = small_model(folder / "m.onnx")
    return model, calibration_file(qtool.load(model), folder / "c.npz")


def test_version_help_and_list_platforms_start_without_torch():
    code = ("import sys, time; t = time.perf_counter(); from qtool.cli.main import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'heavy import'\n"
            "try:\n    main(['quantize', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by quantize --help'\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
            "main(['list-platforms'])\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy list-platforms'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "qtool 0.1.0" in run.stdout and "--json" in run.stdout
    assert "list-platforms" in run.stdout and "onnxruntime-int32bias" in run.stdout  # plugins loaded and listed


def test_python_dash_m_qtool_and_usage_errors_exit_2():
    assert qtool_process("--version").stdout.strip() == f"qtool {qtool.__version__}"
    run = qtool_process("quantize", "--bogus-option")
    assert run.returncode == 2 and "usage:" in run.stderr
    assert qtool_process().returncode == 2


def test_quantize_json_has_the_summary_every_diagnostic_and_float_vs_quantized(small, tmp_path, capsys):
    model, calib = small
    code = main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o",
                 str(tmp_path / "q.onnx"), "--json", "--config", str(w4_config(tmp_path)), "--check-agreement"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["schema_version"] == 1
    summary = document["summary"]
    assert summary["files"] == [str(tmp_path / "q.onnx")]
    gap = summary["float_vs_quantized"]
    assert gap["samples"] == 8 and gap["held_out"] is False and gap["measured_on"].startswith("onnxruntime ")
    sqnr, cosine = gap["outputs"]["output"]["sqnr_db"], gap["outputs"]["output"]["cosine"]
    assert -1.0 <= cosine < 1.0 and sqnr < 40  # 4-bit weights: a real, visible loss
    assert document["diagnostics"] and all(set(d) == {"severity", "code", "message", "op", "tensor", "scheme"}
                                           for d in document["diagnostics"])
    assert sum(summary["diagnostics"].values()) == len(document["diagnostics"])
    assert summary["agreement"]["min_cosine"] <= 1.0


def w4_config(folder: Path) -> Path:
    path = folder / "w4.toml"
    path.write_text("[weight]\nbits = 4\n")
    return path


def test_float_vs_quantized_is_close_at_8_bits(small, tmp_path):
    model, calib = small
    result = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx")
    output = result.summary["float_vs_quantized"]["outputs"]["output"]
    assert output["sqnr_db"] > 25 and 0.99 < output["cosine"] <= 1.0


def test_piped_output_is_not_wrapped(small, tmp_path):
    model, calib = small
    run = qtool_process("quantize", model, "--platform", "onnxruntime", "--calib", calib, "-o", tmp_path / "q.onnx",
                        "--check-agreement")
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("agreement: "))
    assert len(line) > 80 and "min_cosine" in line  # one whole line, not folded at 80 columns


def test_list_platforms_fits_80_columns_with_descriptions():
    run = qtool_process("list-platforms")
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and all(len(line) <= 80 for line in lines)
    assert "  QDQ ONNX model for ONNX Runtime; Conv/Gemm biases stay float" in lines
    assert len(lines) <= 4 * len(qtool.platform.PLATFORMS.names()) + 2


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory):
    """A model of 3,000 Relus: explain's table and JSON of it outgrow a pipe's 64 KiB buffer."""
    path = tmp_path_factory.mktemp("chain") / "chain.onnx"
    nodes = [onnx.helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(3000)]
    graph = onnx.helper.make_graph(nodes, "chain", [onnx.helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT,
                                                                                      [1, 4])],
                                   [onnx.helper.make_tensor_value_info("t3000", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("form", [["--json"], []], ids=["json", "rich table"])
def test_a_reader_that_goes_away_is_no_error(long_chain, form):
    """Exit 141 and nothing on stderr, a shell's code for a writer a closed pipe stopped: no traceback, and not an
    error's 1 (rich's own handler of a closed pipe exited with it)."""
    process = subprocess.Popen([sys.executable, "-m", "qtool", "explain", str(long_chain), "--platform",
                                "onnxruntime", *form], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(1)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (141, b"")


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.15, 0.25, 0.5])
def test_ctrl_c_at_any_moment_is_one_line(small, delay):
    """From the command modules' imports (onnxruntime's raises ImportError from the KeyboardInterrupt) to the end:
    exit 130 and one line, never a traceback. Before that, CPython's own start-up may print its own."""
    model, _ = small
    process = subprocess.Popen([sys.executable, "-m", "qtool", "inspect", str(model)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if b"Fatal Python error: init_import_site" in err:
        pytest.skip("the interrupt came while the interpreter itself started (a loaded machine)")
    assert b"Traceback" not in err
    if process.returncode != 0:  # a fast machine may have finished
        assert (process.returncode, err) in ((130, b"qtool: interrupted\n"), (-signal.SIGINT, b""))


def test_did_you_mean_for_platforms_and_presets(capsys, small):
    model, _ = small
    for platform, hint in (("onnxrntime", "onnxruntime"), ("ONNXRuntime", "onnxruntime"), ("TensorRT", "tensorrt")):
        assert main(["explain", str(model), "--platform", platform]) == 1
        assert f"did you mean '{hint}'?" in capsys.readouterr().err
    assert main(["explain", str(model), "--platform", "onnxruntime", "--preset", "W8A8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qtool: error: unknown preset 'W8A8'; did you mean 'w8a8'?") and "preset:" not in err


def test_every_typo_of_a_config_is_reported_at_once(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[weight]\nbitz = 8\nformt = "int"\n[activation]\nsymetric = true\n[calibration]\nbins = 1\n')
    with pytest.raises(ConfigError) as info:
        resolve_config({}, path)
    message = str(info.value)
    assert message.startswith(f"{path}: 4 problems: ") and "\n" not in message
    for part in ("weight.bitz: unknown key; did you mean 'bits'?", "weight.formt", "activation.symetric",
                 "calibration.bins: "):
        assert part in message


def test_a_refusal_lists_every_error_in_json(tmp_path, capsys, small):
    model, calib = small
    config = tmp_path / "c.toml"
    config.write_text("[weight]\nbits = 2\n")  # 2-bit weights: ORT fuses into 8-bit-only kernels and fails
    code = main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(calib), "-o",
                 str(tmp_path / "out" / "q.onnx"), "--config", str(config), "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    errors = [d for d in document["diagnostics"] if d["severity"] == "error"]
    assert code == 1 and errors and document["refused"] in captured.err
    assert f"({len(errors)} error(s), found before calibration)" in captured.err  # a plan no data can change
    assert not (tmp_path / "out").exists()


def test_analyse_json_has_a_schema_version_and_shows_progress(small, capsys):
    model, calib = small
    assert main(["analyse", str(model), "--platform", "onnxruntime", "--calib", str(calib), "--samples", "2",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["schema_version"] == 2
    assert "RuntimeCalibration" in captured.err and "measuring" in captured.err



def test_plugin_commands_load_only_when_the_command_is_not_a_core_one():
    from qtool.cli.main import needs_plugin_commands

    assert not needs_plugin_commands(["--version"]) and not needs_plugin_commands(["quantize", "--help"])
    assert not needs_plugin_commands(["analyze", "m.onnx"])
    assert needs_plugin_commands(["acme-deploy", "x"]) and needs_plugin_commands([]) and needs_plugin_commands(["-h"])


def test_the_agreement_line_leaves_out_what_was_not_measured():
    """An output that stays float has no grid to count steps on: the line says nothing of steps then."""
    from qtool.cli.quantize import agreement_lines

    [line] = agreement_lines({"runtime": "onnxruntime", "samples": 4, "outputs": {}, "max_steps": None,
                              "min_cosine": 1.0})
    assert line.startswith("agreement: runtime onnxruntime, samples 4, min_cosine 1.0") and "None" not in line


def test_many_diagnostics_of_one_code_print_three_and_a_count():
    """A state space model's 35 near-identical calibration warnings hid the rest of the summary (found by a
    user-style probe): three of a code are printed, then how many more; other codes are printed whole."""
    from qtool.cli.quantize import diagnostic_lines
    from qtool.platform import Diagnostic, Severity

    crushed = [Diagnostic(Severity.WARNING, "calibration.crushed", "most values quantize to zero", tensor=f"t{i}")
               for i in range(35)]
    other = Diagnostic(Severity.WARNING, "output.far-from-float", "far", tensor="y")
    lines = diagnostic_lines([*crushed[:20], other, *crushed[20:]])
    assert lines == [str(d) for d in crushed[:3]] + [str(other),
                                                     "... and 32 more [calibration.crushed] (--json lists every one)"]
