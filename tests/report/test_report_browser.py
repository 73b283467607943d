"""The report opens offline in headless Chromium with its charts, no console error; a screenshot is kept.

The screenshot goes to tests/artifacts/report.png (ignored by git). Chromium is
Debian's package, installed by `make test` where apt exists; CI must have it.
"""

import os
import re
from pathlib import Path

import pytest

from qtool.analysis import snr_text
from qtool.testing.browser import chromium, load

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

needs_chromium = pytest.mark.skipif(chromium() is None and not os.environ.get("CI"),
                                    reason="chromium is not installed (make test installs it where apt exists)")


@needs_chromium
def test_report_loads_with_its_charts_and_no_console_error(analysed):
    report, page, *_ = analysed
    loaded = load(page)
    assert loaded.console == [], loaded.console
    body = re.search(r"<body([^>]*)>", loaded.dom).group(1)
    assert "data-chart-error" not in body
    drawn = int(re.search(r'data-charts="(\d+)"', body).group(1))
    worst = sorted(report.graphwise, key=lambda r: float(r["snr_db"]))[:3]
    assert drawn >= 2 + len(worst)  # the two per-layer charts and at least a histogram per worst layer
    for key, end in (("graphwise", 'id="layerwise-chart"'), ("layerwise", 'id="layers"')):
        chart = loaded.dom.split(f'id="{key}-chart"', 1)[1].split(end, 1)[0]
        bars = re.findall(r'aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="rect mark"', chart)
        drawn_rows = {(re.search(r"op: (.*?);", b).group(1), re.search(r"; SQNR \(dB\): ([^;]+);", b).group(1))
                      for b in bars}
        assert drawn_rows == {(r["op"], snr_text(r["snr_db"])) for r in report.document[key]}, key
    for row in worst:
        assert f"{row['op']} ({row['op_type']})" in loaded.dom  # the layer's details heading
    rows = loaded.dom.split('id="dispatch-table"', 1)[1].split("</table>", 1)[0].count("<tr>")
    assert rows == len(report.dispatch) + 1
    assert "http://" not in page.read_text().split('id="qtool-data"')[0].replace("http://www.w3.org", "")


@needs_chromium
def test_screenshot_is_saved(analysed):
    _, page, *_ = analysed
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    loaded = load(page, screenshot=shot, size=(1400, 3000))
    print(f"report screenshot: {shot}")
    assert loaded.console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@needs_chromium
def test_the_chart_draws_the_infinite_error_below_zero(sqrt_report):
    _, page, *_ = sqrt_report
    loaded = load(page)
    assert loaded.console == []
    chart = loaded.dom.split('id="layerwise-chart"', 1)[1].split('id="layers"', 1)[0]
    (bar,) = re.findall(r'aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="rect mark"', chart)
    assert "op: MatMul_0;" in bar and "SQNR (dB): -inf;" in bar and "graph output SQNR (dB): −20;" in bar
