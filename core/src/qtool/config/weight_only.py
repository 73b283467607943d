"""Weight-only quantization: the ``[weight_only]`` table turned into float activations and blocked weights.

With ``weight_only.enabled``, activations stay float, the weights of ``weight_only.op_types`` (MatMul,
Gemm, Gather embeddings) are quantized per block of ``block_size`` along their *input* (reduction)
axis, and the platform's activation-oriented accuracy defaults (equalization, channel split, outlier
outputs, fallback) are turned off unless the user set them. Gather embedding tables get ``embedding_bits`` (8 by
default: an int4 table costs far more accuracy than its share of the size); a mixture of experts' stack of expert
matrices, gathered by routing (rank >= 3), is projection weights and gets ``bits``, blocked along the axis its
MatMuls sum over. ``[[override]]`` weight keys still apply on top (e.g. 8 bits for an LM head).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..ops import op_roles, reduction_axis
from .errors import ConfigError

WEIGHT_ONLY_OP_TYPES = ("MatMul", "Gemm", "Gather")
ACTIVATION_DEFAULTS_OFF = ("equalization", "fallback", "smoothquant", "channel_split", "outlier_outputs")


def block_axis(op, tensor: str | None = None) -> int | None:
    """The axis a weight-only weight is blocked along: the one its op reduces over (K of x @ W).

    :func:`qtool.ops.reduction_axis` (MatMul x @ W: rows of W, W @ x: its columns; Gemm: 1 with
    transB else 0; Conv: input channels); Gather: the last axis of the table (each embedding row
    blocked on its own), or for a stack of expert matrices the axis its MatMuls sum over
    (:func:`expert_reduction_axis`). ConvTranspose weights are not blocked (None). Else None.
    """
    if op.op_type != "Gather":
        return None if op_roles(op).grouped_out else reduction_axis(op, tensor)
    table = op.inputs[0]
    if table is None or not (table.name == tensor or (tensor is None and table.is_parameter)):
        return None
    if not table.shape:
        return None
    routed = expert_reduction_axis(op) if is_expert_stack(op) else None
    return len(table.shape) + (-1 if routed is None else routed)


def is_expert_stack(op) -> bool:
    """A Gather on axis 0 of a constant table of rank >= 3: a mixture of experts picking each token's expert matrices
    (projection weights, not an embedding table)."""
    table = op.inputs[0] if op.op_type == "Gather" and op.inputs else None
    if table is None or not table.is_parameter or np.ndim(table.value) < 3:
        return False
    return op.attributes.get("axis", 0) in (0, -np.ndim(table.value))


def expert_reduction_axis(op) -> int | None:
    """The axis (from the end) of the gathered expert matrices that every MatMul reading them sums over: -2 for
    x @ W, -1 for W @ x; None where readers differ or are not MatMuls."""
    axes = {(-2 if reader.inputs.index(op.outputs[0]) == 1 else -1) if reader.op_type == "MatMul" else None
            for reader in op.outputs[0].consumers}
    return axes.pop() if len(axes) == 1 else None


def weight_scheme_table(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``[weight]`` scheme table of the weight-only settings: signed symmetric or unsigned asymmetric."""
    symmetric = settings["symmetric"]
    return {"format": "int", "bits": settings["bits"], "signed": symmetric, "symmetric": symmetric,
            "granularity": "per_block", "block_size": settings["block_size"], "observer": "minmax"}


def embedding_table(table: dict[str, Any], origins: dict[str, str], settings: Mapping[str, Any],
                    source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The weight scheme table of a Gather embedding table: ``settings["embedding_bits"]`` wide (``source``
    names where that key came from)."""
    bits = settings["embedding_bits"]
    if table.get("bits") == bits:
        return table, origins
    return {**table, "bits": bits}, {**origins, "bits": f"{source} (weight_only.embedding_bits)"}


def apply_weight_only(tree: dict[str, Any], origins: dict[str, str], platform_source: str) -> tuple[str, ...] | None:
    """Rewrite the merged ``tree`` in place when ``weight_only.enabled``: the keys of ``[activation]``, ``[weight]``,
    ``bias.mode`` (float: no int32 bias without a quantized activation) and the op type lists of ``[dispatch]`` a
    preset or the user gave that it replaces (a tuple, maybe empty), else None.

    An ``[[override]]`` that quantizes activations is refused (ConfigError): weight-only keeps them float, and
    ONNX Runtime refused the mixed model at its default optimization level (its QDQ rewrites met int8 and uint8
    zero points); so is one that asks for an integer bias, which needs a quantized activation."""
    settings = tree["weight_only"]
    if not settings["enabled"]:
        return None
    for i, item in enumerate(tree["override"]):
        if item.get("activation") not in (None, "float"):
            raise ConfigError(f"{origins.get(f'override[{i}]', 'config')}: override[{i}].activation: [weight_only] "
                              "keeps activations float, so an override cannot quantize them (ONNX Runtime refuses "
                              "the mixed model: 'output_dtype INT8 does not match y_zero_point type UINT8'); remove "
                              "it, or leave [weight_only] off and use a16w8/w8a8 with weight overrides")
        if (item.get("bias") or {}).get("mode") not in (None, "float"):
            raise ConfigError(f"{origins.get(f'override[{i}]', 'config')}: override[{i}].bias.mode: [weight_only] "
                              "keeps activations float, so no bias is written on an integer grid (it had no effect); "
                              "remove it, or leave [weight_only] off")
    source = f"{origins.get('weight_only.enabled', 'built-in defaults')} (weight_only)"
    dispatch = {"quantize_op_types": list(settings["op_types"]), "passive_op_types": [], "between_op_types": []}
    ignored = _replaced(tree, origins, platform_source, weight_scheme_table(settings), dispatch)
    tree["bias"]["mode"] = "float"
    origins["bias.mode"] = source
    tree["activation"] = None
    tree["weight"] = weight_scheme_table(settings)
    for key in [k for k in origins if k.split(".")[0] in ("activation", "weight")]:
        del origins[key]
    origins.update({"activation": source, "weight": source, **{f"weight.{k}": source for k in tree["weight"]}})
    tree["dispatch"].update(dispatch)
    origins.update({f"dispatch.{key}": source for key in dispatch})
    for name in ACTIVATION_DEFAULTS_OFF:
        if origins.get(f"accuracy.{name}", platform_source) == platform_source:
            tree["accuracy"][name] = False
            origins[f"accuracy.{name}"] = source
    return ignored


def _replaced(tree: dict[str, Any], origins: dict[str, str], platform_source: str, weight: dict[str, Any],
              dispatch: dict[str, Any]) -> tuple[str, ...]:
    """The ``activation``/``weight`` keys, ``bias.mode`` and ``dispatch`` op type lists a preset or the user set that
    weight-only replaces, by source ("qconfig.toml: activation (bits, symmetric)"); keys equal to what weight-only
    sets (a saved config read back) are not."""
    found: dict[str, dict[str, list[str]]] = {}
    op_type_lists = {key: tree["dispatch"][key] for key in dispatch}
    for role, table, replacement in (("activation", tree["activation"], None), ("weight", tree["weight"], weight),
                                     ("bias", tree["bias"], {"mode": "float"}), ("dispatch", op_type_lists, dispatch)):
        if table is None:
            continue
        for key, value in table.items():
            origin = origins.get(f"{role}.{key}", origins.get(role))
            if origin in (None, platform_source) or (replacement is not None and _same(replacement.get(key), value)):
                continue
            found.setdefault(origin, {}).setdefault(role, []).append(key)
    return tuple(f"{origin}: " + ", ".join(f"{role} ({', '.join(keys)})" for role, keys in roles.items())
                 for origin, roles in found.items())


def _same(replacement: Any, value: Any) -> bool:
    """A key's value equals what weight-only sets (an op type list in any order)."""
    if isinstance(value, list) and isinstance(replacement, list):
        return sorted(value) == sorted(replacement)
    return replacement == value
