"""accuracy_passes(): the options dict becomes the passes before dispatch and after calibration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import qtool
import torch
from accuracy_helpers import digits, export, ort_outputs, outputs, quantize, snr_db
from qtool.passes.accuracy import (
    AFTER_CALIBRATION,
    BEFORE_DISPATCH,
    AccuracyError,
    AdaRound,
    BiasCorrection,
    CrossLayerEqualization,
    SensitivityFallback,
    SmoothQuant,
    accuracy_passes,
    option_names,
)
from torch import nn

DOCS = Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"
EXAMPLE = {"equalization": True, "bias_correction": True, "adaround": {"iterations": 300},
           "smoothquant": {"alpha": 0.5}, "fallback": {"min_snr_db": 30}}


def test_example_options():
    before, after = accuracy_passes(EXAMPLE, "cpu", data=digits(0, 8))
    assert [type(p) for p in before] == [CrossLayerEqualization, SmoothQuant]
    assert [type(p) for p in after] == [SensitivityFallback, AdaRound, BiasCorrection]
    assert after[1].iterations == 300 and before[1].alpha == 0.5 and after[0].budget == ("snr_db", 30.0)
    assert all(getattr(p, "device", "cpu") == "cpu" for p in before + after)


def test_off_and_empty():
    assert accuracy_passes(None) == ([], [])
    assert accuracy_passes({"equalization": False, "adaround": None}) == ([], [])
    before, after = accuracy_passes({"equalization": {"iterations": 3}})
    assert before[0].iterations == 3 and after == []


@pytest.mark.parametrize(("options", "message"), [
    ({"adarond": True}, r"accuracy\.adarond: unknown accuracy pass; did you mean 'adaround'\?"),
    ({"adaround": {"iteration": 3}}, r"accuracy\.adaround\.iteration: unknown option; did you mean 'iterations'\?"),
    ({"adaround": {"device": "cuda"}}, r"accuracy\.adaround\.device: unknown option"),
    ({"smoothquant": "yes"}, r"accuracy\.smoothquant: must be true, false or a table"),
    ({"fallback": {"min_snr_db": "high"}}, r"accuracy\.fallback\.min_snr_db: an SNR budget is a finite number of dB"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(AccuracyError, match=message) as caught:
        accuracy_passes(options, data=digits(0, 8))
    assert isinstance(caught.value, qtool.QtoolError)


def test_an_option_error_names_the_file_that_set_the_pass(tmp_path):
    """accuracy.adaround.iterationz: unknown option named no file, where every other configuration error does."""
    from qtool.config import resolve_config
    from qtool.passes.order import default_passes

    path = tmp_path / "c.toml"
    path.write_text("[accuracy]\nadaround = { iterationz = 3 }\n")
    with pytest.raises(AccuracyError, match=rf"^{re.escape(str(path))}: accuracy\.adaround\.iterationz: unknown option"):
        default_passes(resolve_config({}, path), digits(0, 8))


def test_passes_that_run_the_graph_need_data():
    with pytest.raises(AccuracyError, match=r"accuracy\.bias_correction: BiasCorrection needs calibration data"):
        accuracy_passes({"bias_correction": True})


def test_all_together_in_the_default_order(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    calib, test = digits(0, 64), digits(500, 128)
    options = {"equalization": True, "adaround": {"iterations": 50, "samples": 64}, "bias_correction": True,
               "fallback": {"min_snr_db": 20}}
    snr = {}
    for chosen in ({}, options):
        graph = export(model, torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
        reference = ort_outputs(graph, test)
        before, after = accuracy_passes(chosen, "cpu", data=calib)
        config = {"preset": "w4a8", "accuracy": {"fallback": False}}  # only the passes chosen here
        runs = quantize(graph, config, calib, before=before, after=after)
        snr[bool(chosen)] = snr_db(outputs(graph, test), reference)
    assert list(runs)[:2] == ["GraphSimplify", "CrossLayerEqualization"]
    assert list(runs)[-4:] == ["SensitivityFallback", "AdaRound", "BiasCorrection", "Baking"]
    assert snr[True] > snr[False] + 3, snr


def test_docs_describe_every_option():
    text = DOCS.read_text()
    for name, cls in {**BEFORE_DISPATCH, **AFTER_CALIBRATION}.items():
        section = re.search(rf"^## [^\n]*`{name}`.*?(?=^## |\Z)", text, re.M | re.S)  # from its heading line
        assert section, f"docs/accuracy.md has no section for {name}"
        for option in option_names(cls):
            assert f"`{option}`" in section.group(0), f"docs/accuracy.md: {name} does not describe {option}"
        rows = re.findall(r"^\| `(\w+)` \|", _option_tables(section.group(0)), re.M)
        assert set(rows) <= set(option_names(cls)), f"docs/accuracy.md: {name}'s table lists options it lacks"


def _option_tables(section: str) -> str:
    """The rows of a section's option tables (those under a ``| option | default | meaning |`` header)."""
    tables = re.findall(r"^\| option \| default \| meaning \|\n((?:^\|.*\n)+)", section, re.M)
    return "".join(tables)
