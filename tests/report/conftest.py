"""The analysed models of the report tests: the demo's CNN with the SNR fallback on, measured on 2 samples, and a
MatMul whose quantization makes NaN of its own."""

import numpy as np
import pytest

import qtool
from qtool.testing.models import matmul_sqrt_model

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


@pytest.fixture(scope="session")
def sqrt_report(tmp_path_factory):
    """(report, page, model, calib) of y = Sqrt(x @ W), whose quantized MatMul moves values across 0."""
    folder = tmp_path_factory.mktemp("sqrt")
    model = matmul_sqrt_model(folder / "sqrt.onnx")
    calib = folder / "calib.npz"
    np.savez(calib, x=3 * np.random.default_rng(4).standard_normal((8, 16)).astype(np.float32))
    report = qtool.analyse(model, "onnxruntime", calib, samples=8)
    page = folder / "report.html"
    report.to_html(page)
    return report, page, model, calib
