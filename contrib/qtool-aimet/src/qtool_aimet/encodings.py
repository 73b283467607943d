"""The encodings document, built from qtool's quantized tensors.

AIMET reads an integer encoding as ``x = (q + offset) * scale`` with ``q`` in
``[0, 2^bw - 1]``; a symmetric encoding has offset ``-2^(bw-1)``. qtool's codes
``c`` (``x = (c - zp) * scale``) are written on the full ``bw``-bit grid that
holds them, so the values agree: a symmetric scheme with AIMET's symmetric
offset (its codes minus the zero point lie in ``[-2^(bw-1), 2^(bw-1) - 1]``,
a narrow ``[-127, 127]`` included), any other with ``offset = lowest - zp``,
``lowest`` the first code of the storage type (-2^(bw-1) signed, 0 unsigned).
"""

from __future__ import annotations

import numpy as np
import qtool

VERSIONS = ("0.6.1", "1.0.0")


def aimet_offset(entry: qtool.QuantizedTensor) -> np.ndarray:
    """The offset per channel (int64): ``-2^(bw-1)`` for a symmetric scheme, else ``lowest - zero_point``."""
    scheme, zero = entry.scheme, np.asarray(entry.offset, dtype=np.int64).reshape(-1)
    half = 2 ** (scheme.num_of_bits - 1)
    if scheme.is_symmetric:
        return np.full_like(zero, -half)
    return (-half if scheme.is_signed else 0) - zero


def _channels(entry: qtool.QuantizedTensor) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(entry.scale, dtype=np.float32).reshape(-1)
    offset = aimet_offset(entry)
    return scale, np.broadcast_to(offset, scale.shape)


def encoding_061(entry: qtool.QuantizedTensor) -> list[dict]:
    """One 0.6.1 encoding per channel (one for per-tensor)."""
    bw = entry.scheme.num_of_bits
    symmetric = str(entry.scheme.is_symmetric)
    return [{"bitwidth": bw, "dtype": "int", "is_symmetric": symmetric,
             "max": float(np.float32((2**bw - 1 + int(o)) * np.float64(s))),
             "min": float(np.float32(int(o) * np.float64(s))), "offset": int(o), "scale": float(s)}
            for s, o in zip(*_channels(entry), strict=True)]


def encoding_100(entry: qtool.QuantizedTensor) -> dict:
    """The 1.0.0 encoding of a tensor: lists of scales and offsets."""
    scale, offset = _channels(entry)
    return {"name": entry.tensor, "dtype": "INT",
            "enc_type": "PER_CHANNEL" if entry.scheme.is_per_channel else "PER_TENSOR",
            "bw": entry.scheme.num_of_bits, "is_sym": entry.scheme.is_symmetric,
            "scale": [float(s) for s in scale], "offset": [int(o) for o in offset]}


def first_per_tensor(graph) -> tuple[list[qtool.QuantizedTensor], list[qtool.QuantizedTensor]]:
    """Activation and parameter entries, one per tensor name (the producer's where readers differ)."""
    seen: set[str] = set()
    activations, params = [], []
    for entry in qtool.quantized_tensors(graph):
        if entry.tensor in seen:
            continue
        seen.add(entry.tensor)
        (activations if entry.role == "activation" else params).append(entry)
    return activations, params


def quantizer_args(activations, params) -> dict:
    """The global settings AIMET records beside the encodings, as qtool's tensors show them.

    A width or symmetry with no quantized tensor to show it (``weight = "float"``) is left out, not null.
    """
    def most_common_bits(entries):
        bits = [e.scheme.num_of_bits for e in entries]
        return max(set(bits), key=bits.count) if bits else None

    weights = [e for e in params if e.role == "weight"]
    args = {"activation_bitwidth": most_common_bits(activations), "param_bitwidth": most_common_bits(weights),
            "dtype": "int", "per_channel_quantization": any(e.scheme.is_per_channel for e in weights),
            "is_symmetric": all(e.scheme.is_symmetric for e in weights) if weights else None}
    return {key: value for key, value in args.items() if value is not None}


def encodings_document(graph, version: str = "0.6.1") -> dict:
    """The whole encodings JSON object for ``graph`` in format ``version`` ("0.6.1" or "1.0.0")."""
    if version not in VERSIONS:
        raise ValueError(f"encodings version {version!r}: this plugin writes {' and '.join(VERSIONS)}")
    activations, params = first_per_tensor(graph)
    if version == "0.6.1":  # tables by tensor name, a list of per-channel encodings each
        body = {"activation_encodings": {e.tensor: encoding_061(e) for e in activations},
                "param_encodings": {e.tensor: encoding_061(e) for e in params}}
    else:  # lists of named encodings, per-channel values in lists
        body = {"activation_encodings": [encoding_100(e) for e in activations],
                "param_encodings": [encoding_100(e) for e in params]}
    return {"version": version, **body, "quantizer_args": quantizer_args(activations, params)}
