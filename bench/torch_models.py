"""Test and benchmark models built from torch.nn with random weights, exported to ONNX.

Shapes follow ResNet-18, MobileNetV2 and a small BERT encoder; the widths can be
scaled down for fast tests. Import from tests with ``sys.path`` pointing at
``bench/`` (see ``tests/executor/conftest.py``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

# -- ResNet-18 shape -------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """Stem, four stages of two basic blocks, global pooling and a linear head."""

    def __init__(self, width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for stage, cout in enumerate(width * m for m in (1, 2, 4, 8)):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (the stride), 1x1 expand, each with BatchNorm; a projected shortcut where shapes change."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """ResNet-50's shape: stem, stages of 3, 4, 6 and 3 bottleneck blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for stage, (mid, count) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            for i in range(count):
                blocks.append(Bottleneck(cin, mid, mid * 4, 2 if stage and not i else 1))
                cin = mid * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


# -- MobileNetV2 shape -----------------------------------------------------------------


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = _conv_bn(cin, hidden, 1, 1) if expand != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, cout, 1, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, output channels at width 1.0, repeats, first stride), as in MobileNetV2
_MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """Inverted residual blocks with depthwise convolutions and ReLU6."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()

        def scaled(c: int) -> int:
            return max(8, int(c * width + 4) // 8 * 8)

        cin = scaled(32)
        layers = _conv_bn(3, cin, 3, 2)
        for expand, c, repeats, stride in _MOBILENET_STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, scaled(c), stride if i == 0 else 1, expand))
                cin = scaled(c)
        last = scaled(1280) if width > 1.0 else 1280
        layers += _conv_bn(cin, last, 1, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


# -- BERT-style encoder ------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: self-attention with an additive mask, then a GELU MLP."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x, additive_mask):
        b, t, h = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5 + additive_mask
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.norm1(x + self.proj(context))
        return self.norm2(x + self.mlp(x))


class BertEncoder(nn.Module):
    """Token and position embeddings (Gather), LayerNorm, then encoder layers."""

    def __init__(self, vocab: int = 1000, hidden: int = 64, heads: int = 4, layers: int = 2,
                 max_len: int = 128) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads) for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.norm(self.tokens(input_ids) + self.positions(positions))
        additive_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, additive_mask)
        return x


# -- building and exporting ----------------------------------------------------------------


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (so folding BN is not the identity), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model.eval()


def export(model: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
           dynamic_axes: dict | None = None, opset: int = 17) -> onnx.ModelProto:
    """TorchScript-based ONNX export to an in-memory ModelProto."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)  # torch's own logging
        torch.onnx.export(model, example, buffer, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def cnn_onnx(name: str, width: float | None = None, size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """``resnet18`` or ``mobilenetv2`` with random weights; input ``image`` [batch, 3, size, size]."""
    torch.manual_seed(seed)
    if name == "resnet18":
        model = ResNet18(width=int(width or 64))
    elif name == "mobilenetv2":
        model = MobileNetV2(width=width or 1.0)
    else:
        raise ValueError(f"unknown CNN {name!r} (resnet18, mobilenetv2)")
    example = (torch.randn(1, 3, size, size),)
    return export(randomize(model, seed), example, ["image"], ["logits"],
                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def encoder_onnx(hidden: int = 64, heads: int = 4, layers: int = 2, vocab: int = 1000,
                 seed: int = 0) -> onnx.ModelProto:
    """A BERT-style encoder; inputs ``input_ids`` and ``attention_mask`` (int64 [batch, seq])."""
    torch.manual_seed(seed)
    model = randomize(BertEncoder(vocab, hidden, heads, layers), seed)
    ids = torch.randint(0, vocab, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "hidden": {0: "batch", 1: "seq"}}
    return export(model, (ids, mask), ["input_ids", "attention_mask"], ["hidden"], dynamic_axes=axes)


def encoder_inputs(batch: int, seq: int, vocab: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids and a mask that hides the tail of every other sequence."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1::2, seq // 2:] = 0
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}
