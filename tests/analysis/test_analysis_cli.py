"""`qtool analyse` ranks the layers of a real trained CNN (the demo's digits model)."""

import json
import subprocess
import sys


def analyse(*args):
    result = subprocess.run([sys.executable, "-m", "qtool.cli.main", "analyse", *map(str, args)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_two_bit_layer_ranks_first(digits, tmp_path):
    model, calib, _ = digits
    config = tmp_path / "two_bit.toml"
    config.write_text('[[override]]\nop_name = "/features/features.3/Conv"\nweight = { bits = 2 }\n')
    report = json.loads(analyse(model, "--platform", "onnxruntime", "--calib", calib, "--config", config,
                                "--samples", "32", "--json"))
    layerwise = report["layerwise"]
    assert layerwise[0]["op"] == "/features/features.3/Conv"
    assert layerwise[0]["snr_db"] < layerwise[1]["snr_db"]
    ranked = [r["snr_db"] for r in layerwise if r["snr_db"] is not None]
    assert ranked == sorted(ranked)
    assert {r["op"] for r in report["graphwise"]} == {r["op"] for r in layerwise}


def test_table_output(digits):
    model, calib, _ = digits
    text = analyse(model, "--platform", "onnxruntime", "--calib", calib, "--samples", "8", "--top", "3")
    assert "Graph-wise error" in text and "Layer-wise sensitivity" in text
    assert text.count("│ 1 ") == 2 and "│ 4 " not in text  # two tables of --top 3 rows


def test_it_says_how_many_samples_it_measured_on(digits):
    """--calib-samples 4 keeps 4 samples: the analysis runs on those, and says so, not on the 16 asked for."""
    model, calib, _ = digits
    result = subprocess.run([sys.executable, "-m", "qtool.cli.main", "analyse", str(model), "--platform",
                             "onnxruntime", "--calib", str(calib), "--calib-samples", "4", "--samples", "16"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "measuring the error of each op on 4 samples (of 16 asked: --calib-samples 4 keeps no more)" \
        in " ".join(result.stderr.split())
