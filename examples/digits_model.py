"""A small CNN trained in seconds on scikit-learn's bundled handwritten digits.

Everything is deterministic and offline: the data ships inside scikit-learn.
Samples are split three ways: training, calibration and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits


@dataclass
class DigitsSplit:
    train_x: np.ndarray
    train_y: np.ndarray
    calib_x: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray


def load_split(seed: int = 0) -> DigitsSplit:
    """1797 8x8 images scaled to [0, 1], shuffled, split 1200 / 200 / 397."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order].astype(np.int64)
    return DigitsSplit(images[:1200], labels[:1200], images[1200:1400], images[1400:], labels[1400:])


class DigitsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.nn.ReLU6(),
            torch.nn.Conv2d(32, 64, 1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train(split: DigitsSplit, epochs: int = 10, seed: int = 0) -> DigitsNet:
    torch.manual_seed(seed)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(split.train_x), torch.from_numpy(split.train_y)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def export(model: DigitsNet, path: Path) -> Path:
    """ONNX with a dynamic batch axis, input 'image' [N, 1, 8, 8], output 'logits'."""
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def build(workdir: Path, seed: int = 0) -> tuple[Path, DigitsSplit]:
    """Train, export, and return the float model's path with the data split."""
    split = load_split(seed)
    return export(train(split, seed=seed), Path(workdir) / "digits_cnn.onnx"), split
