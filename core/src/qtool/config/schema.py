"""The configuration schema: every key once, with its type, default and meaning.

Validation, the did-you-mean hints, the built-in defaults and the reference
tables of docs/configuration.md are all driven by the tables here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..quant import RoundingPolicy

GRANULARITIES = ("per_tensor", "per_channel", "per_block")

# Named float formats: name -> (exponent_bits, mantissa_bits); bits = 1 + e + m.
FLOAT_FORMATS: dict[str, tuple[int, int]] = {
    "fp8_e4m3": (4, 3),
    "fp8_e5m2": (5, 2),
    "fp6_e3m2": (3, 2),
    "fp6_e2m3": (2, 3),
    "fp4_e2m1": (2, 1),
    "fp16": (5, 10),
    "bf16": (8, 7),
}
FORMATS = ("int", "float", *FLOAT_FORMATS)

# Alignment groups: which op types each one governs.
ALIGNMENT_GROUPS: dict[str, tuple[str, ...]] = {
    "concat": ("Concat",),
    "add": ("Add", "Sub", "Sum"),
    "minmax": ("Max", "Min"),
}
ALIGNMENT_MODES = ("output", "max", "none")

MATCHERS = ("op_type", "op_name", "tensor")


@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``kind`` is one of bool, int, number, str, list, scheme (a scheme table or
    the string "float"), table (a fixed sub-table), overrides (a list of tables)
    or options (true, false, or a table of options checked by their consumer).
    ``resets``: keys a layer drops from lower layers when it sets this one
    without setting them itself (e.g. a new ``bits`` drops an inherited range).
    """

    kind: str
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None
    resets: tuple[str, ...] = ()
    shown_default: str | None = None  # how the docs show a derived default

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, str):
            return f'"{self.default}"'
        if isinstance(self.default, tuple):
            return "[" + ", ".join(f'"{v}"' for v in self.default) + "]"
        return str(self.default)

    def type_text(self) -> str:
        if self.choices:
            return " \\| ".join(f'"{c}"' for c in self.choices)
        return {"list": "list of str", "number": "float", "scheme": "table or \"float\"",
                "overrides": "list of tables", "options": "bool or table"}.get(self.kind, self.kind)


def _between(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = (lo < value if lo_open else lo <= value) and value <= hi
        if ok:
            return None
        return f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {value!r}"

    return check


def _one_of(*allowed: int) -> Callable[[Any], str | None]:
    return lambda value: None if value in allowed else f"must be one of {', '.join(map(str, allowed))}, got {value!r}"


def _at_least(lo: int) -> Callable[[Any], str | None]:
    return lambda value: None if value >= lo else f"must be >= {lo}, got {value!r}"


SCHEME_KEYS: dict[str, Key] = {
    "format": Key("str", "int", "Number format: integer codes, an eXmY float (`float` with `exponent_bits`), "
                  "or a named float format.", choices=FORMATS,
                  resets=("bits", "exponent_bits", "mantissa_bits", "quant_min", "quant_max", "signed", "symmetric")),
    "bits": Key("int", 8, "Width in bits (1-16). For floats, 1 + exponent_bits + mantissa_bits.",
                check=_between(1, 16), resets=("quant_min", "quant_max"),
                shown_default="8 (named float formats: their width)"),
    "signed": Key("bool", True, "Integer range: signed [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b-1].",
                  resets=("quant_min", "quant_max"), shown_default="true (or the sign of `quant_min`)"),
    "quant_min": Key("int", None, "Lowest integer code; any range that fits `bits` as signed or unsigned "
                     "and contains 0.", resets=("signed",), shown_default="from `bits` and `signed`"),
    "quant_max": Key("int", None, "Highest integer code.", resets=("signed",),
                     shown_default="from `bits` and `signed`"),
    "symmetric": Key("bool", True, "Symmetric (zero point at the centre of the range) or asymmetric "
                     "(zero point from the observed minimum). Float formats are symmetric."),
    "granularity": Key("str", "per_tensor", "One scale per tensor, per channel along `axis`, "
                       "or per block of `block_size` elements along `axis`.", choices=GRANULARITIES,
                       resets=("axis", "block_size"), shown_default='"per_tensor" (weight: "per_channel")'),
    "axis": Key("int", None, "Channel axis for per_channel / per_block.",
                shown_default="activation: 1; weight: the op's natural axis"),
    "block_size": Key("int", None, "Elements per block along `axis` (per_block only).", check=_at_least(1)),
    "exponent_bits": Key("int", None, "Exponent width of a `format = \"float\"` scheme.", check=_between(1, 8)),
    "mantissa_bits": Key("int", None, "Mantissa width of a `format = \"float\"` scheme (else bits - 1 - e).",
                         check=_between(0, 14)),
    "power_of_2": Key("bool", False, "Round scales up to powers of two (int formats only)."),
    "dynamic": Key("bool", False, "Scales computed at run time by the target instead of calibrated."),
    "rounding": Key("str", "half_even", "Rounding of values to codes.",
                    choices=tuple(r.value for r in RoundingPolicy)),
    "observer": Key("str", None, "Calibration observer that computes scale and offset (weights: minmax or mse).",
                    shown_default="activation: `calibration.observer`; weight: \"minmax\""),
}

SECTION_KEYS: dict[str, dict[str, Key]] = {
    "bias": {
        "mode": Key("str", "int32", "int32: codes at scale s_in * s_w with zero point 0; float: bias kept float.",
                    choices=("int32", "float")),
    },
    "dispatch": {
        "quantize_op_types": Key("list", ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul",
                                          "AveragePool", "GlobalAveragePool"),
                                 "Op types that are quantized (inputs, weights and outputs)."),
        "passive_op_types": Key("list", ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool",
                                         "GlobalMaxPool", "Slice", "Concat", "Split", "Gather", "Tile", "Expand",
                                         "DepthToSpace", "SpaceToDepth"),
                                "Data-movement op types whose activations share their input's config."),
        "between_op_types": Key("list", (), "Op types quantized, with scales of their own, only between quantized "
                                "ops: every data input written by a quantized op (no constant) and the output read "
                                "by one (a residual Add between Convs)."),
        "exclude": Key("list", (), "Op-name globs kept float (fnmatch syntax: `*`, `?`, `[...]`)."),
        "include": Key("list", (), "Op-name globs quantized even when their type is not in "
                       "`quantize_op_types`; they win over `exclude`."),
        "model_quantization": Key("str", "requantize", "A model that arrives in QDQ form (Q/DQ pairs of its own: "
                                  "ONNX Runtime's QDQ output, a QAT export): requantize removes them and quantizes "
                                  "the float model they leave; keep keeps their scales (a QAT model's learned ones) "
                                  "and quantizes only the float tensors around them.",
                                  choices=("requantize", "keep")),
    },
    "fusion": {
        "fuse_activations": Key("bool", True, "Fuse activations into the preceding compute op "
                                "(its output is quantized only after the activation)."),
        "activations": Key("list", ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSwish", "HardSigmoid",
                                    "Tanh", "Gelu"), "Op types that fusion treats as activations."),
        "fused_activations": Key("list", ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSwish", "HardSigmoid",
                                          "Tanh", "Gelu"),
                                 "Activations of `activations` fused into the compute op before them (its output is "
                                 "not quantized); the others are quantized on both sides, so that a runtime which "
                                 "runs them apart keeps the compute op's integer kernel."),
        "float_outputs": Key("list", (), "Compute op types whose output stays float when no quantized op reads it "
                             "(the target runtime has an integer kernel with float output, e.g. ONNX Runtime's "
                             "MatMulIntegerToFloat): one rounding and one Q/DQ pair less."),
        "float_unread": Key("bool", False, "Outputs of other ops (activations, Add...) on the way to the graph "
                            "outputs that no quantized op reads, directly, through data-movement ops or after "
                            "float ops, stay float, and so do those data-movement ops: no rounding that no "
                            "integer kernel asked for."),
        "remove_activations": Key("bool", False, "Drop Relu/Clip at export where the quantized range "
                                  "already clips exactly."),
    },
    "alignment": {
        group: Key("str", "output" if group == "concat" else "max",
                   f"Scale alignment of {', '.join(types)} inputs: output (take the output's scale), "
                   "max (one scale covering all inputs), none.", choices=ALIGNMENT_MODES)
        for group, types in ALIGNMENT_GROUPS.items()
    },
    "calibration": {
        "observer": Key("str", "auto", "Default activation observer (auto: per tensor, the range of minmax, "
                        "percentile, kl or mse with the least quantization error); a name may carry its main "
                        "option, e.g. \"percentile:99.9\"."),
        "percentile": Key("number", 99.99, "Percentile kept by the percentile observer.",
                          check=_between(50, 100, lo_open=True)),
        "bins": Key("int", 4096, "Histogram bins of histogram-based observers.", check=_at_least(2)),
        "batch_size": Key("int", 32, "Samples per calibration batch (at most; samples given one by one are joined "
                                     "into batches of about 16 MiB at most, and ONNX Runtime runs a batch in runs of "
                                     "16 MiB of tensors).", check=_at_least(1)),
        "engine": Key("str", "auto", "What runs the float model for the observers: onnxruntime (the model with the "
                      "observed tensors as extra outputs), torch (qtool's executor, on `--device`) or auto "
                      "(onnxruntime where it can run the model on the CPU, else torch).",
                      choices=("auto", "onnxruntime", "torch")),
    },
    "weight_only": {
        "enabled": Key("bool", False, "Weight-only quantization: activations stay float, the weights of `op_types` "
                       "are quantized per block along their input axis (replaces `[activation]`, `[weight]`, "
                       "`bias.mode` and the dispatch op type lists; `[[override]]` weight keys still apply)."),
        "bits": Key("int", 4, "Weight width: 4 (MatMulNBits int4) or 8.", check=_one_of(4, 8)),
        "symmetric": Key("bool", True, "Symmetric signed codes using the whole range (scale = the block's "
                         "extreme / -2^(bits-1), ONNX Runtime's MatMulNBits rule; no zero points written) or "
                         "asymmetric unsigned codes with a zero point per block."),
        "block_size": Key("int", 32, "Weights per block along the input axis (one scale each).",
                          check=_one_of(16, 32, 64, 128, 256)),
        "op_types": Key("list", ("MatMul", "Gemm", "Gather"), "Op types whose weights are quantized "
                        "(Gather: embedding tables, blocked along each row)."),
        "embedding_bits": Key("int", 8, "Width of Gather embedding tables: 8 (default; an int4 table costs "
                              "~1% of a decoder's perplexity for a few % of its size) or 4.", check=_one_of(4, 8)),
    },
    "accuracy": {
        "equalization": Key("options", False, "Cross-layer equalization of Conv pairs before dispatch "
                            "(see docs/accuracy.md for its options).",
                            shown_default="false (onnxruntime platforms: true)"),
        "smoothquant": Key("options", False, "SmoothQuant scale migration into MatMul/Gemm weights before dispatch."),
        "channel_split": Key("options", False, "Split the outlier input channels of MatMul/Gemm layers into "
                             "smaller copies before dispatch (the layer stays int8, reads a few more channels).",
                             shown_default="false (onnxruntime platforms: on MatMul)"),
        "outlier_outputs": Key("options", False, "Keep float the output of a quantized MatMul whose output has "
                               "outlier channels and that no quantized op reads (its integer kernel writes float).",
                               shown_default="false (onnxruntime platforms: true)"),
        "fallback": Key("options", False, "Return the most sensitive ops to float (or wider types) until an "
                        "accuracy budget holds.",
                        shown_default="false (onnxruntime platforms: outlier MatMul/Gemm; w4a8 preset: 4-bit layers)"),
        "adaround": Key("options", False, "Learned rounding of weights (AdaRound)."),
        "bias_correction": Key("options", False, "Correct the mean output shift that weight quantization causes."),
        "gptq": Key("options", False, "GPTQ: weight-only blocks rounded column by column with the rounding error "
                    "pushed onto the columns not yet rounded, through each layer's input Hessian."),
        "awq": Key("options", False, "AWQ: activation-aware per-input-channel scales searched per layer and "
                   "folded into the op before it (or a Mul) before weight-only rounding."),
        "hqq": Key("options", False, "HQQ: half-quadratic optimisation of each block's scale and zero point "
                   "against a sparse weight error (no data needed)."),
    },
}

TOP_KEYS: dict[str, Key] = {
    "preset": Key("str", None, "A named starting point applied over the platform defaults (see Presets)."),
    "activation": Key("scheme", None, "Scheme of activations (inputs and outputs of quantized ops).",
                      shown_default="int8 symmetric per-tensor"),
    "weight": Key("scheme", None, "Scheme of weights (parameter inputs of quantized ops).",
                  shown_default="int8 symmetric per-channel"),
    **{name: Key("table", None, f"The `[{name}]` table.", shown_default="see the table")
       for name in SECTION_KEYS},
    "override": Key("overrides", (), "Per-op or per-tensor exceptions, applied in order (later ones win).",
                    shown_default="[]"),
    "pass": Key("passes", (), "Passes from plugins (hook `qtool_register_passes`) inserted into the "
                "default order.", shown_default="[]"),
}

PASS_KEYS: dict[str, Key] = {
    "name": Key("str", None, "The name a plugin registered the pass under."),
    "after": Key("str", None, "The pass it runs after, e.g. \"QuantAlignment\" (see `qtool quantize` progress)."),
    "options": Key("options", None, "Keyword arguments of the pass's constructor (it also receives `data`, "
                   "`device` and `progress` when it takes them)."),
}

OVERRIDE_KEYS: dict[str, Key] = {
    "op_type": Key("str", None, "Matcher: ops of this exact type."),
    "op_name": Key("str", None, "Matcher: ops whose name matches this glob."),
    "tensor": Key("str", None, "Matcher: the tensor of this exact name, at every op that reads or writes it."),
    "activation": Key("scheme", None, "Scheme keys merged over the activation scheme, or \"float\"."),
    "weight": Key("scheme", None, "Scheme keys merged over the weight scheme, or \"float\"."),
    "bias": Key("table", None, "`{ mode = ... }` for the matched ops (op matchers only)."),
    "keep_float": Key("bool", False, "true: the matched ops (or tensor) stay float."),
}


def keys_of(section: str) -> dict[str, Key]:
    """The keys a table accepts: 'scheme', 'override', a section name, or '' for the top level."""
    if section == "":
        return TOP_KEYS
    if section == "scheme":
        return SCHEME_KEYS
    if section == "override":
        return OVERRIDE_KEYS
    if section == "pass":
        return PASS_KEYS
    return SECTION_KEYS[section]


def base_config() -> dict[str, Any]:
    """The built-in defaults in the config structure (below every platform default)."""
    base: dict[str, Any] = {"activation": {}, "weight": {}, "override": [], "pass": []}
    for section, keys in SECTION_KEYS.items():
        base[section] = {name: list(k.default) if isinstance(k.default, tuple) else k.default
                         for name, k in keys.items()}
    return base


@dataclass(frozen=True)
class RefTable:
    """One reference table of docs/configuration.md: a heading and rows rendered from keys."""

    title: str
    prefix: str
    keys: dict[str, Key] = field(default_factory=dict)

    def rows(self) -> list[str]:
        return [f"| `{self.prefix}{name}` | {k.type_text()} | {k.default_text()} | {k.doc} |"
                for name, k in self.keys.items()]


def reference_tables() -> list[RefTable]:
    """Every key, grouped as the docs show them."""
    return [RefTable("Top level", "", TOP_KEYS), RefTable("Scheme keys", "", SCHEME_KEYS),
            *(RefTable(f"[{name}]", f"{name}.", keys) for name, keys in SECTION_KEYS.items()),
            RefTable("[[override]]", "override.", OVERRIDE_KEYS), RefTable("[[pass]]", "pass.", PASS_KEYS)]


def reference_markdown() -> str:
    """The key reference as markdown tables (pasted into docs/configuration.md)."""
    parts = []
    for table in reference_tables():
        parts.append(f"### {table.title}\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
                     + "\n".join(table.rows()))
    return "\n\n".join(parts) + "\n"
