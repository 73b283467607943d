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


def test_a_folder_of_feeds_is_measured_without_torchs_warning(tmp_path):
    """Arrays of a feeds folder are read-only (mapped from their files): handed to torch as they were, each run
    printed torch's 'The given NumPy array is not writable' UserWarning, pointing into qtool."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", 3])],
                              [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "mm.onnx")
    (tmp_path / "feeds").mkdir()
    for i, length in enumerate((3, 5, 7)):
        np.savez(tmp_path / "feeds" / f"{i}.npz", x=rng.standard_normal((1, length, 4)).astype(np.float32))
    result = subprocess.run([sys.executable, "-m", "qtool.cli.main", "analyse", str(tmp_path / "mm.onnx"),
                             "--platform", "onnxruntime", "--calib", str(tmp_path / "feeds"), "--calib-layout", "feeds"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
