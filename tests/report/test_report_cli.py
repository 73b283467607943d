"""`qtool analyse --html` and `qtool quantize --report` write the page; without the extra they stop at once."""

import json
import subprocess
import sys

WITHOUT_EXTRA = "import sys; sys.modules['vl_convert'] = None; from qtool.cli.main import main; sys.exit(main())"


def qtool(*args, without_extra=False):
    command = [sys.executable, "-c", WITHOUT_EXTRA, *map(str, args)] if without_extra else [
        sys.executable, "-m", "qtool.cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True)


def _document(page):
    return json.loads(page.read_text().split('id="qtool-data">', 1)[1].split("</script>", 1)[0])


def test_analyse_html(digits, tmp_path):
    model, calib, _ = digits
    page = tmp_path / "out" / "analysis.html"
    done = qtool("analyse", model, "--platform", "onnxruntime", "--calib", calib, "--samples", "2", "--html", page,
                 "--json")
    assert done.returncode == 0, done.stderr
    document, printed = _document(page), json.loads(done.stdout)
    assert document["model"] == str(model) and document["samples"] == 2
    assert document["agreement"]["min_cosine"] > 0.99  # the exported model was run by onnxruntime
    by_op = {r["op"]: r["snr_db"] for r in document["layerwise"]}
    assert {r["op"]: r["snr_db"] for r in printed["layerwise"]} == by_op


def test_quantize_report(digits, tmp_path):
    model, calib, _ = digits
    page = tmp_path / "quantized.html"
    done = qtool("quantize", model, "--platform", "onnxruntime", "--calib", calib, "-o", tmp_path / "q.onnx",
                 "--report", page)
    assert done.returncode == 0, done.stderr
    assert f"wrote {page}" in done.stdout.replace("\n", "")
    document = _document(page)
    assert document["coverage"]["total"] == len(document["dispatch"])
    assert document["agreement"]["samples"] > 0


def test_missing_extra_is_one_line_naming_it_before_any_work(digits, tmp_path):
    model, calib, _ = digits
    for args in (("analyse", model, "--platform", "onnxruntime", "--calib", calib, "--html", tmp_path / "a.html"),
                 ("quantize", model, "--platform", "onnxruntime", "--calib", calib, "-o", tmp_path / "q.onnx",
                  "--report", tmp_path / "q.html")):
        done = qtool(*args, without_extra=True)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'qtool[report]'" in lines[0], done.stderr
        assert list(tmp_path.iterdir()) == []  # nothing written, not even the quantized model


def test_analyse_checks_its_inputs_before_torch_is_imported(tmp_path):
    """Every input error of analyse took 1.7-2.5 s (qtool.report imported torch first), where quantize's take 0.3 s
    (a probe's finding)."""
    script = ("import sys; from qtool.cli.main import main; "
              f"code = main(['analyse', {str(tmp_path / 'nope.onnx')!r}, '--platform', 'onnxruntime', "
              "'--calib', 'x.npz']); print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"], (done.stdout, done.stderr)
    assert "nope.onnx: no such model file" in done.stderr
