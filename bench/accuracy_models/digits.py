"""A small residual CNN trained with torch on scikit-learn's handwritten digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import SessionLike, session

SOURCE = (
    "A residual CNN (Conv/BatchNorm/ReLU stem, two residual blocks with Add, global average pooling, Gemm head) "
    "trained here for ~25 s with torch (seed 0, one thread, deterministic) on the UCI handwritten digits that ship "
    "inside scikit-learn (sklearn/datasets/data/digits.csv.gz, 1797 8x8 images, CC BY 4.0), exported with "
    "torch.onnx.export(dynamo=False, opset 17). The 1797 images are shuffled with seed 0 and split 1097 train / 200 "
    "calibration / 500 evaluation; the three sets are disjoint."
)
METRIC = "top-1 accuracy"
INPUT = "image"
_TRAIN, _CALIB = 1097, 200


def _split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], digits.target[order].astype(np.int64)
    train = slice(0, _TRAIN)
    calib = slice(_TRAIN, _TRAIN + _CALIB)
    evaluation = slice(_TRAIN + _CALIB, None)
    return (images[train], labels[train]), images[calib], (images[evaluation], labels[evaluation])


def _network():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    class DigitsResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.blocks = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

    return DigitsResNet()


def build(workdir: Path) -> Path:
    """Train (cached in ``workdir``) and export; returns the float ONNX path."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    path = Path(workdir) / "digits_resnet.onnx"
    if path.exists():
        return path
    import torch

    (train_x, train_y), _, _ = _split()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = _network()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
        generator = torch.Generator().manual_seed(0)
        for _ in range(20):
            model.train()
            for idx in torch.randperm(len(x), generator=generator).split(64):
                # light augmentation: shift by up to one pixel
                dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
                batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(batch), y[idx]).backward()
                optimizer.step()
        model.eval()
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(tmp), dynamo=False, opset_version=17,
                          input_names=[INPUT], output_names=["logits"],
                          dynamic_axes={INPUT: {0: "batch"}, "logits": {0: "batch"}})
        tmp.replace(path)
    finally:
        torch.set_num_threads(threads)
    return path


def calibration_data(n: int = 64) -> list[dict[str, np.ndarray]]:
    """Up to 200 calibration images, one sample each, disjoint from training and evaluation."""
    _, calib, _ = _split()
    return [{INPUT: calib[i:i + 1]} for i in range(min(n, len(calib)))]


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """Top-1 accuracy on the 500 held-out evaluation images."""
    sess = session(model)
    _, _, (images, labels) = _split()
    if limit:
        images, labels = images[:limit], labels[:limit]
    logits = np.concatenate([sess.run(None, {INPUT: images[i:i + 100]})[0] for i in range(0, len(images), 100)])
    return float((logits.argmax(1) == labels).mean())
