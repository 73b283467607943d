"""The fallback's budgets at their edges: a metric drop equal to max_drop, a metric that gives no number, an SNR
budget on a graph whose outputs are all integer."""

from __future__ import annotations

import math

import pytest
import torch
from accuracy_helpers import export, quantize, samples
from qtool.passes import PassError, PassWarning
from qtool.passes.accuracy.fallback import SensitivityFallback
from torch import nn

PER_TENSOR = {"weight": {"granularity": "per_tensor"}}


class Net(nn.Module):
    """conv -> Relu -> conv; ``labels`` ends it in an ArgMax (int64, the graph's only output)."""

    def __init__(self, labels: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.labels = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), labels

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return y.argmax(1) if self.labels else y


@pytest.fixture
def data():
    return samples((3, 6, 6), 16)


def _fallback(tmp_path, data, fallback, labels=False):
    graph = export(Net(labels), torch.zeros(1, 3, 6, 6), tmp_path / "net.onnx")
    return quantize(graph, PER_TENSOR, data, after=[fallback])["SensitivityFallback"].details


def test_a_drop_of_exactly_max_drop_meets_it(tmp_path, data):
    """docs/cli.md: "0.005 on an accuracy of 0.99 allows 0.985", though 0.99 - 0.985 > 0.005 in binary floats."""

    def accuracy(executor) -> float:
        return 0.985 if executor.quantize else 0.99

    assert 0.99 - 0.985 > 0.005
    details = _fallback(tmp_path, data, SensitivityFallback(data, metric=accuracy, max_drop=0.005))
    assert details["met"] and details["changed"] == [] and details["tried"] == {0: 0.99 - 0.985}


def test_a_drop_past_max_drop_still_fails_it(tmp_path, data):
    def accuracy(executor) -> float:
        return 0.98 if executor.quantize and any(op.quant and op.quant.quantized
                                                  for op in executor.graph.operations.values()) else 0.99

    details = _fallback(tmp_path, data, SensitivityFallback(data, metric=accuracy, max_drop=0.0099999))
    assert details["met"] and details["changed"]  # only float gives the 0.99 back


@pytest.mark.parametrize("value, shown", [(math.nan, "nan"), ("oops", "'oops'"), (None, "None")])
def test_a_metric_that_gives_no_finite_number_is_refused_by_name(tmp_path, data, value, shown):
    def broken_metric(executor):
        return value

    with pytest.raises(PassError, match=rf"accuracy\.fallback\.metric: {__file__}:\S*broken_metric "
                                        rf"returned {shown}, not a finite number"):
        _fallback(tmp_path, data, SensitivityFallback(data, metric=broken_metric, max_drop=0.01))


def test_a_metric_that_raises_is_named_with_its_exception(tmp_path, data):
    """'pass SensitivityFallback failed (...): boom' named neither the metric's file nor its function."""
    def raising_metric(executor):
        raise ValueError("boom")

    with pytest.raises(PassError, match=rf"accuracy\.fallback\.metric: {__file__}:\S*raising_metric raised "
                                        r"ValueError: boom$"):
        _fallback(tmp_path, data, SensitivityFallback(data, metric=raising_metric, max_drop=0.01))


def test_an_snr_budget_on_integer_outputs_says_it_cannot_be_measured(tmp_path, data):
    with pytest.warns(PassWarning, match="SNR >= 30 dB cannot be measured: every graph output is integer"):
        details = _fallback(tmp_path, data, SensitivityFallback(data, min_snr_db=30), labels=True)
    assert not details["met"] and details["changed"] == [] and details["before"] is None
    assert details["budget"] == "none (SNR >= 30 dB cannot be measured: every graph output is integer or boolean)"
