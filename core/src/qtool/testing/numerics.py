"""qtool's own numbers for a config, to compare an exported file against."""

from __future__ import annotations

import numpy as np
import torch

from ..quant import TensorQuantizationConfig, dequantize_codes, fake_quantize


def dequantize(tqc: TensorQuantizationConfig, codes) -> np.ndarray:
    """The float values of integer ``codes`` (qtool's domain, quant_min..quant_max) under ``tqc``.

    Per-channel configs take ``codes`` of shape (channels, n): row c uses channel c's parameters.
    """
    scheme = tqc.scheme
    if scheme.is_per_channel:
        scheme = scheme.with_changes(channel_axis=0, block_size=None)
    return dequantize_codes(np.asarray(codes), scheme, tqc.scale, tqc.offset)


def simulate(tqc: TensorQuantizationConfig, values) -> np.ndarray:
    """``values`` quantized and dequantized as qtool's simulation does it (float32)."""
    tensor = torch.from_numpy(np.array(values, dtype=np.float32))
    return fake_quantize(tensor, tqc.scheme, tqc.scale, tqc.offset).numpy()
