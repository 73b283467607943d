"""The report's document (qtool.analyse) and its page: the page shows the document's numbers."""

import html
import json
import re

import numpy as np
import pytest
import qtool
from qtool.analysis import quantized_ops
from qtool.calibration import load_calibration_data
from qtool.executor import TorchExecutor
from qtool.report.api import report_of
from qtool.report.html import fmt_snr


def _cells(page: str, table_id: str) -> list[list[str]]:
    body = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1])]


@pytest.fixture(scope="module")
def quantized(analysed, report_config):
    """The same quantization as the analysed report's."""
    _, _, model, calib = analysed
    return qtool.quantize(model, "onnxruntime", calib, config=report_config)


def test_float_vs_quantized_matches_a_direct_computation(analysed, quantized):
    report, _, _, calib = analysed
    result = quantized
    executor = TorchExecutor(result.graph)
    signal = noise = 0.0
    for sample in load_calibration_data(calib, result.graph).samples(2):
        executor.quantize = False
        ref = executor.forward(sample)[0].astype(np.float64)
        executor.quantize = True
        out = executor.forward(sample)[0].astype(np.float64)
        signal += float((ref ** 2).sum())
        noise += float(((out - ref) ** 2).sum())
    [logits] = report.outputs
    assert logits["output"] == "logits"
    assert np.isclose(logits["snr_db"], 10 * np.log10(signal / noise), atol=1e-6)
    assert 20 < logits["snr_db"] < 90 and logits["cosine"] > 0.99


def test_rows_cover_every_quantized_op_in_topological_order(analysed, quantized):
    report, *_ = analysed
    result = quantized
    assert [r["index"] for r in report.graphwise] == list(range(len(report.graphwise)))
    assert [r["op"] for r in report.layerwise] == [r["op"] for r in report.graphwise]
    assert len(report.dispatch) == len(result.graph.operations)
    quantized = {op["name"] for op in report.dispatch if op["quantized"]}
    assert {r["op"] for r in report.graphwise} == quantized
    assert report.document["coverage"]["quantized"] == len(quantized)


def test_histograms_carry_the_observer_candidates_and_auto_choice(analysed):
    report, *_ = analysed
    assert report.activations, "no activation histogram"
    for entry in report.activations:
        assert set(entry["candidates"]) >= {"minmax", "percentile:99.9", "percentile:99.99", "mse"}
        assert entry["auto_choice"] in entry["candidates"]
        counts, lo, width = entry["histogram"]["counts"], entry["histogram"]["lo"], entry["histogram"]["width"]
        assert sum(counts) > 0 and len(counts) <= 96
        minmax = entry["candidates"]["minmax"]
        assert lo <= minmax[0] + 1e-6 and minmax[1] <= lo + len(counts) * width + 1e-6
        assert entry["range"][0] <= 0 <= entry["range"][1]


def test_weight_ranges_are_the_weights_own(analysed, quantized):
    report, *_ = analysed
    graph = quantized.graph  # equalized: the weights as quantized, not the float model's
    for entry in report.weights:
        var = graph.variables[entry["tensor"]]
        value = var.float_value  # baked: the value is on the grid, the float one is kept beside it
        assert value is not None and not np.array_equal(value, var.value)
        assert entry["channels"] == value.shape[entry["axis"]]
        rows = np.moveaxis(value, entry["axis"], 0).reshape(entry["channels"], -1)
        np.testing.assert_allclose(entry["min"], rows.min(axis=1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(entry["max"], rows.max(axis=1), rtol=1e-4, atol=1e-6)
        assert len(entry["clip_min"]) == len(entry["clip_max"]) == entry["channels"]
        assert all(lo < 0 < hi for lo, hi in zip(entry["clip_min"], entry["clip_max"], strict=True))


def test_page_shows_the_documents_numbers(analysed):
    report, page_path, *_ = analysed
    page = page_path.read_text()
    embedded = page.split('id="qtool-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded) == json.loads(report.to_json())
    outputs = _cells(page, "outputs")
    assert [row[:2] for row in outputs] == [[o["output"], fmt_snr(o["snr_db"])] for o in report.outputs]
    coverage = report.document["coverage"]
    assert f'id="quantized-count">{coverage["quantized"]}<' in page
    assert f'id="total-count">{coverage["total"]}<' in page
    assert [r[1] for r in _cells(page, "dispatch-table")] == [html.unescape(op["name"]) for op in report.dispatch]
    fallback = next(p for p in report.document["passes"] if p["name"] == "SensitivityFallback")
    changed = fallback["details"]["changed"]
    assert changed, "the SNR budget changed no op: the fallback table is not exercised"
    assert [(r[0], r[2]) for r in _cells(page, "fallback-changes")] == [
        (c["op"], fmt_snr(c["sensitivity_snr_db"])) for c in changed]
    counts = dict((r[0], int(r[1])) for r in _cells(page, "diagnostics"))
    assert counts == report.document["diagnostics"]["counts"]


def test_notebook_repr_is_the_page_in_an_iframe(analysed):
    report, *_ = analysed
    shown = report._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "vegaEmbed" in html.unescape(shown)


def test_explain_from_python(digits, tmp_path):
    explanation = qtool.explain(digits[0], "onnxruntime")
    assert {op["op_type"] for op in explanation.ops} >= {"Conv", "Gemm"}
    assert json.loads(explanation.to_json())["ops"] == explanation.ops
    page = explanation.to_html(tmp_path / "explain.html")
    assert (tmp_path / "explain.html").read_text() == page
    assert "vegaEmbed" not in page and page.count("<tr>") == len(explanation.ops) + 1


def test_quantize_result_report(digits, tmp_path):
    model, calib, _ = digits
    result = qtool.quantize(model, "onnxruntime", calib)
    report = result.report(tmp_path / "r.html", samples=2)
    assert report.document["samples"] == 2 and report.document["model"] == str(model)
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert [r["op"] for r in report.graphwise] == [op.name for op in quantized_ops(result.graph)]


def test_equalization_scales_are_listed(analysed):
    report, page_path, *_ = analysed
    equalization = next(p for p in report.document["passes"] if p["name"] == "CrossLayerEqualization")
    scales = equalization["details"]["scales"]
    assert scales and all(0 < s["min"] <= s["max"] for s in scales.values())
    rows = _cells(page_path.read_text(), "equalization-scales")
    assert [r[0] for r in rows] == list(scales)
    assert [r[1] for r in rows] == [f"{s['min']:.4g}" for s in scales.values()]


def test_the_measurements_run_on_the_threads_of_quantizes_passes(quantized, analysed, monkeypatch):
    """The report's runs of the model (one per op) took torch's own thread count, where quantize's passes take one
    thread on a machine whose cores other work fills (a probe's analyses ran at 7-70x a quantize's CPU time there)."""
    import torch

    _, _, _, calib = analysed
    monkeypatch.setenv("QTOOL_NUM_THREADS", "1")
    seen = []
    before = torch.get_num_threads()
    report_of(quantized, calib, samples=2, announce=lambda _: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before


def test_the_sample_count_is_of_model_calls_in_the_feeds_layout(tmp_path):
    """Each feed of 3 rows is one sample: the page said 'measured on 6 calibration samples' for 2."""
    from qtool.report import analyse
    from qtool.testing.models import matmul_sqrt_model

    model = matmul_sqrt_model(tmp_path / "sqrt.onnx")
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((3, 16)).astype(np.float32)} for _ in range(4)]
    report = analyse(model, "onnxruntime", feeds, calib_layout="feeds", samples=2)
    assert report.document["samples"] == 2


def test_analyse_takes_only_the_calibration_keywords_of_quantize(digits, tmp_path):
    """analyse passed every keyword on to quantize: save_state= and report= wrote files ("nothing written"), a
    misspelled keyword was blamed on quantize()."""
    model, calib, _ = digits
    for keyword in ("save_state", "report", "bogus"):
        with pytest.raises(TypeError, match=f"analyse\\(\\) got an unexpected keyword argument '{keyword}'"):
            qtool.analyse(model, "onnxruntime", calib, samples=1, **{keyword: tmp_path / "x"})
    assert not list(tmp_path.iterdir())

