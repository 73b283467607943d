"""A small byte-level GPT-style decoder trained here on Python's own sources; perplexity on held-out sources."""

from __future__ import annotations

import math
import sysconfig
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import SessionLike, session

SOURCE = (
    "A 4-layer byte-level decoder (GPT-2 style: learned positions, pre-LayerNorm blocks of causal self-attention and "
    "a GELU MLP, nn.Linear projections exported as MatMul + Add; width 128, 4 heads, MLP 512, context 128, vocabulary "
    "256 bytes, ~0.9 M parameters) trained in the bench with AdamW for a fixed wall-clock budget on CPU, seed 0. "
    "Text: the standard library's .py files (sysconfig stdlib path, sorted); files whose name hashes to 0 mod 10 "
    "are held out. Metric: perplexity per byte over 512 held-out windows of 128 bytes (every position predicted)."
)
METRIC = "perplexity per byte (held-out stdlib sources; lower is better)"
CONTEXT, WIDTH, HEADS, LAYERS, HIDDEN = 128, 128, 4, 4, 512
EVALUATION_WINDOWS = 512  # 64 left differences of ~0.3% between equally good quantizers to chance


@lru_cache(maxsize=1)
def _texts() -> tuple[bytes, bytes]:
    """(training bytes, held-out bytes) from the stdlib's .py files."""
    import zlib

    train, held = [], []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        data = path.read_bytes()
        (held if zlib.crc32(path.name.encode()) % 10 == 0 else train).append(data)
    return b"\n".join(train), b"\n".join(held)


def _windows(text: bytes, count: int, seed: int, length: int = CONTEXT + 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(text) - length, count)
    data = np.frombuffer(text, np.uint8)
    return np.stack([data[s:s + length] for s in starts]).astype(np.int64)


def _network():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
            self.up, self.down = nn.Linear(WIDTH, HIDDEN), nn.Linear(HIDDEN, WIDTH)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(WIDTH, dim=2)
            q, k, v = (z.view(n, t, HEADS, WIDTH // HEADS).transpose(1, 2) for z in (q, k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(WIDTH // HEADS)
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            attended = torch.softmax(scores.masked_fill(mask, -1e9), -1) @ v
            x = x + self.proj(attended.transpose(1, 2).reshape(n, t, WIDTH))
            return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))

    class ByteLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.position = nn.Embedding(256, WIDTH), nn.Embedding(CONTEXT, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.norm, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 256)

        def forward(self, tokens):
            x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1]))[None]
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    return ByteLM()


def build(workdir: Path, train_seconds: float = 300.0, log=print) -> Path:
    """Train the decoder for ``train_seconds`` (<= 900) and export it to ONNX (cached in ``workdir``)."""
    import torch

    path = Path(workdir) / f"bytelm_{int(train_seconds)}s.onnx"
    if path.exists():
        return path
    Path(workdir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = _network()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    train, _ = _texts()
    start, step = time.monotonic(), 0
    while time.monotonic() - start < min(train_seconds, 900.0):
        batch = torch.from_numpy(_windows(train, 16, seed=step))
        loss = torch.nn.functional.cross_entropy(model(batch[:, :-1]).reshape(-1, 256), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            log(f"bytelm: step {step}, loss {loss.item():.3f}, {time.monotonic() - start:.0f} s")
    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, CONTEXT, dtype=torch.int64),), str(tmp), dynamo=False,
                          opset_version=17, input_names=["tokens"], output_names=["logits"],
                          dynamic_axes={"tokens": {0: "batch", 1: "length"}, "logits": {0: "batch", 1: "length"}})
    tmp.replace(path)
    log(f"bytelm: {step} steps in {time.monotonic() - start:.0f} s")
    return path


def calibration_data(n: int = 32) -> list[dict[str, np.ndarray]]:
    """``n`` training windows of 128 bytes, one [1, 128] sample each."""
    windows = _windows(_texts()[0], n, seed=10**6)[:, :CONTEXT]
    return [{"tokens": windows[i:i + 1]} for i in range(n)]


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """Perplexity per byte over held-out windows."""
    sess = session(model)
    windows = _windows(_texts()[1], limit or EVALUATION_WINDOWS, seed=1)
    total, count = 0.0, 0
    for i in range(0, len(windows), 16):
        chunk = windows[i:i + 16]
        logits = sess.run(None, {"tokens": chunk[:, :-1]})[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= np.take_along_axis(logp, chunk[:, 1:, None], -1).sum()
        count += chunk[:, 1:].size
    return float(math.exp(total / count))
