"""Full float32 arithmetic on CUDA: no TF32 in convolutions and matrix products while qtool runs a graph.

TF32 keeps 10 mantissa bits, so with it a simulation on CUDA would disagree
with the CPU (and with onnxruntime) by far more than one quantization step
allows near a rounding boundary. The user's own settings are restored after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """Turn TF32 off for cuDNN and cuBLAS on a CUDA ``device`` for the duration (no-op elsewhere)."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield
    finally:
        matmul.allow_tf32 = saved
