"""An SQNR of -inf (an output NaN in one model only) reads -inf in the report, the page and `qtool analyse`: the
document wrote every non-finite number as null, which the page, the tables and the ranking read as exact, so the
one op that broke the model was shown as the best one."""

import json
import math
import re
import subprocess
import sys

from qtool.analysis import json_number, snr_text
from qtool.report import REPORT_SCHEMA_VERSION



def test_non_finite_numbers_are_written_as_text_both_languages_read():
    assert [json_number(v) for v in (2.5, math.inf, -math.inf, math.nan)] == [2.5, "Infinity", "-Infinity", "NaN"]
    assert [float(json_number(v)) for v in (math.inf, -math.inf)] == [math.inf, -math.inf]
    assert [snr_text(v) for v in (41.237, "Infinity", "-Infinity", "NaN")] == ["41.24", "exact", "-inf", "undefined"]


def test_the_document_keeps_minus_infinity(sqrt_report):
    report, *_ = sqrt_report
    (output,) = report.outputs
    (layer,) = report.layerwise
    assert report.document["schema_version"] == REPORT_SCHEMA_VERSION == 2
    assert output["snr_db"] == layer["snr_db"] == "-Infinity" and layer["op"] == "MatMul_0"
    assert output["cosine"] > 0.99  # the finite elements agree: only the NaN of one model makes it -inf
    assert json.loads(report.to_json())["outputs"] == report.outputs  # strict JSON


def test_the_page_says_minus_inf(sqrt_report):
    _, page, *_ = sqrt_report
    text = page.read_text()
    outputs = text.split('id="outputs"', 1)[1].split("</table>", 1)[0]
    assert re.search(r"<td>y</td><td>-inf</td>", outputs), outputs


def test_analyse_ranks_it_first_and_prints_minus_inf(sqrt_report):
    _, _, model, calib = sqrt_report
    command = [sys.executable, "-m", "qtool.cli.main", "analyse", str(model), "--platform", "onnxruntime", "--calib",
               str(calib), "--samples", "8"]
    printed = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, check=True).stdout)
    assert printed["schema_version"] == 2 and float(printed["layerwise"][0]["snr_db"]) == -math.inf
    table = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    layerwise = table.split("Layer-wise sensitivity", 1)[1]
    assert re.search(r"│ 1\s+│ MatMul_0\s+│ MatMul\s+│ -inf\s+│", layerwise), layerwise

