"""Named starting points, applied over the platform defaults and under the user's keys."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError, did_you_mean

_INT8_SYM = {"format": "int", "bits": 8, "signed": True, "symmetric": True}
_PER_TENSOR = {"granularity": "per_tensor"}
_PER_CHANNEL = {"granularity": "per_channel"}
# 4-bit weights back to 8 bits, most sensitive layer first, until the output SNR is within 1 dB of all-8-bit
W4_FALLBACK = {"max_gap_db": 1.0, "precision": {"weight_bits": 8}, "samples": 16}


def _fp(name: str) -> dict[str, Any]:
    return {"activation": {"format": name, **_PER_TENSOR}, "weight": {"format": name, **_PER_CHANNEL}}


PRESET_ARGUMENT = "preset argument"  # the source of a preset named by --preset / preset=, not by a file
PRESETS: dict[str, dict[str, Any]] = {
    "w8a8": {"activation": {**_INT8_SYM, **_PER_TENSOR}, "weight": {**_INT8_SYM, **_PER_CHANNEL}},
    "w8a8-asym": {
        "activation": {**_INT8_SYM, "symmetric": False, "quant_min": -128, "quant_max": 127, **_PER_TENSOR},
        "weight": {**_INT8_SYM, **_PER_CHANNEL},
    },
    "w8a8-u8": {
        "activation": {**_INT8_SYM, "signed": False, "symmetric": False, **_PER_TENSOR},
        "weight": {**_INT8_SYM, **_PER_CHANNEL},
    },
    "w4a8": {"activation": {**_INT8_SYM, **_PER_TENSOR},
             "weight": {**_INT8_SYM, "bits": 4, **_PER_CHANNEL},
             "accuracy": {"fallback": W4_FALLBACK}},
    "a16w8": {"activation": {**_INT8_SYM, "bits": 16, **_PER_TENSOR}, "weight": {**_INT8_SYM, **_PER_CHANNEL}},
    "int4-weight-only": {"weight_only": {"enabled": True, "bits": 4, "symmetric": False, "block_size": 32}},
    "int8-weight-only": {"weight_only": {"enabled": True, "bits": 8, "symmetric": True, "block_size": 32}},
    "fp8-e4m3": _fp("fp8_e4m3"),
    "fp8-e5m2": _fp("fp8_e5m2"),
}

PRESET_DOCS: dict[str, str] = {
    "w8a8": "int8 symmetric per-channel weights, int8 symmetric per-tensor activations",
    "w8a8-asym": "as w8a8, activations int8 asymmetric [-128, 127]",
    "w8a8-u8": "as w8a8, activations uint8 asymmetric [0, 255]",
    "w4a8": "int4 symmetric per-channel weights, int8 symmetric per-tensor activations; "
            "accuracy.fallback widens the most sensitive layers' weights to int8 until the output SNR is within "
            "1 dB of int8 weights",
    "a16w8": "int16 symmetric per-tensor activations, int8 symmetric per-channel weights",
    "int4-weight-only": "float activations; MatMul/Gemm weights int4 asymmetric in blocks of 32 along the input "
                        "axis, Gather embedding tables int8 (ONNX Runtime: MatMulNBits, GatherBlockQuantized)",
    "int8-weight-only": "float activations; MatMul/Gemm/Gather weights int8 symmetric in blocks of 32 along the "
                        "input axis",
    "fp8-e4m3": "fp8 e4m3 weights (per-channel scales) and activations (per-tensor)",
    "fp8-e5m2": "fp8 e5m2 weights (per-channel scales) and activations (per-tensor)",
}


def get_preset(name: str, source: str) -> dict[str, Any]:
    """The preset's config layer; ConfigError (naming ``source``) with a hint when unknown."""
    if name not in PRESETS:
        known = ", ".join(PRESETS)
        where = "" if source == PRESET_ARGUMENT else f"{source}: preset: "
        raise ConfigError(f"{where}unknown preset {name!r}{did_you_mean(name, PRESETS)} (known: {known})")
    return PRESETS[name]
