"""The report's activation histograms count every value, the maximum included where it falls on a bin edge."""

import numpy as np
import qtool
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x)


def test_the_bin_of_the_maximum_is_kept(tmp_path):
    """Pixels in [0, 1] on a grid of 1/16, many saturated at exactly 1.0: edges of the power-of-two bins, which
    the document's ``lo`` and ``width`` give exactly."""
    model = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(model), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    x = (np.round(np.random.default_rng(0).uniform(0, 1.2, (4, 1, 8, 8)) * 16) / 16).clip(0, 1).astype(np.float32)
    assert (x == 1.0).sum() > 20
    np.savez(tmp_path / "calib.npz", x=x)
    report = qtool.analyse(model, "onnxruntime", tmp_path / "calib.npz", samples=4, agreement=False)
    [entry] = [a for a in report.activations if a["tensor"] == "x"]
    counts, lo, width = (entry["histogram"][k] for k in ("counts", "lo", "width"))
    assert sum(counts) == x.size
    edges = lo + width * np.arange(len(counts) + 1)
    np.testing.assert_array_equal(counts, np.histogram(x, bins=edges)[0])
