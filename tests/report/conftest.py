"""One analysed model for the report tests: the demo's CNN with the SNR fallback on, measured on 2 samples."""

import pytest

import qtool

CONFIG = {"accuracy": {"fallback": {"min_snr_db": 48.0, "outlier_ratio": None, "op_types": None}}}


@pytest.fixture(scope="session")
def report_config():
    return CONFIG


@pytest.fixture(scope="session")
def analysed(digits, tmp_path_factory):
    """(AnalysisReport, path of its HTML page, model path, calibration path)."""
    model, calib, _ = digits
    report = qtool.analyse(model, "onnxruntime", calib, config=CONFIG, samples=2)
    page = tmp_path_factory.mktemp("report") / "report.html"
    report.to_html(page)
    return report, page, model, calib
