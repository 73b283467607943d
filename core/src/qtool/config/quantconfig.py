"""QuantConfig: the resolved configuration the passes read (frozen)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from ..ops import is_compute, weight_axis
from ..quant import QuantScheme
from .errors import ConfigError
from .merge import merge_scheme
from .overrides import Override
from .schema import ALIGNMENT_GROUPS
from .schemes import ACTIVATION_AXIS, SchemeConflict, build_scheme, describe_scheme
from .weight_only import block_axis, embedding_table, is_expert_stack

ROLES = ("activation", "weight")
PLATFORM_SOURCE = "platform defaults"  # the origin of keys a platform's default_config() set


@dataclass(frozen=True)
class QuantConfig:
    """Everything the passes need to know, merged from platform defaults, preset and user file.

    ``activation`` / ``weight`` are merged scheme tables (None: keep float);
    read schemes through :meth:`scheme_for`, which applies the overrides.
    """

    activation: Mapping[str, Any] | None
    weight: Mapping[str, Any] | None
    bias_mode: str
    quantize_op_types: frozenset[str]
    passive_op_types: frozenset[str]
    between_op_types: frozenset[str]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    fuse_activations: bool
    fusion_activations: frozenset[str]
    fused_activations: frozenset[str]
    float_outputs: frozenset[str]
    float_unread: bool
    remove_activations: bool
    alignment: Mapping[str, str]
    calibration: Mapping[str, Any]
    accuracy: Mapping[str, Any] = field(default_factory=dict)
    passes: tuple[Mapping[str, Any], ...] = ()
    overrides: tuple[Override, ...] = ()
    preset: str | None = None
    weight_only: Mapping[str, Any] | None = None  # the [weight_only] table when enabled (see config.weight_only)
    model_quantization: str = "requantize"  # a QDQ model's own Q/DQ pairs: "requantize" or "keep"
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # keys of [activation]/[weight]/[bias]/[dispatch] a preset or the user set that [weight_only] replaced (warned)
    ignored: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_tree(cls, tree: Mapping[str, Any], origins: Mapping[str, str], preset: str | None, *,
                  weight_only: bool = False, ignored: tuple[str, ...] = ()) -> QuantConfig:
        """Build from a merged config tree and check every scheme it can form."""
        dispatch, fusion = tree["dispatch"], tree["fusion"]
        config = cls(
            activation=_frozen(tree["activation"]), weight=_frozen(tree["weight"]),
            bias_mode=tree["bias"]["mode"],
            quantize_op_types=frozenset(dispatch["quantize_op_types"]),
            passive_op_types=frozenset(dispatch["passive_op_types"]),
            between_op_types=frozenset(dispatch["between_op_types"]),
            include=tuple(dispatch["include"]), exclude=tuple(dispatch["exclude"]),
            fuse_activations=fusion["fuse_activations"], fusion_activations=frozenset(fusion["activations"]),
            fused_activations=frozenset(fusion["fused_activations"]),
            float_outputs=frozenset(fusion["float_outputs"]), float_unread=fusion["float_unread"],
            remove_activations=fusion["remove_activations"],
            alignment=MappingProxyType(dict(tree["alignment"])),
            calibration=MappingProxyType(dict(tree["calibration"])),
            accuracy=MappingProxyType(dict(tree["accuracy"])),
            passes=tuple(MappingProxyType(dict(item)) for item in tree["pass"]),
            overrides=tuple(Override.from_item(item, f"{origins.get(f'override[{i}]', 'config')}: override[{i}]")
                            for i, item in enumerate(tree["override"])),
            preset=preset, weight_only=_frozen(tree["weight_only"]) if weight_only else None,
            model_quantization=dispatch["model_quantization"],
            origins=MappingProxyType(dict(origins)), ignored=tuple(ignored),
        )
        config._check_schemes()
        return config

    # -- schemes -------------------------------------------------------------
    def scheme_for(self, op, role: str, tensor: str | None = None,
                   channel_axis: int | None = None, rank: int | None = None) -> QuantScheme | None:
        """The scheme of ``tensor`` in ``role`` at ``op`` after overrides; None keeps it float.

        ``channel_axis`` is used by per-channel schemes whose table gives no
        ``axis``; when omitted, weights use the op's natural axis and activations
        axis 1. A weight without any axis (e.g. a constant input of Add) falls
        back to per-tensor, and so does one of another op than Conv, Gemm, MatMul... (a bias an Add reads) that
        the table's axis lies outside. ``rank``: the tensor's, where known; an axis the table gives outside it is
        otherwise a ConfigError naming the key.
        """
        if role not in ROLES:
            raise ValueError(f"scheme_for role must be 'activation' or 'weight', got {role!r} "
                             "(bias: see bias_mode_for)")
        if self.is_excluded(op):
            return None
        table, origins = self._table_for(op, role, tensor)
        if table is None:
            return None
        if channel_axis is None and role == "weight":
            # weight-only blocks run along the input axis; a per-channel override keeps the output channels
            blocked = self.weight_only and table.get("granularity", "per_block") == "per_block"
            channel_axis = block_axis(op, tensor) if blocked else weight_axis(op, tensor)
        elif channel_axis is None:
            channel_axis = ACTIVATION_AXIS
        if channel_axis is None and "axis" not in table:
            table = {k: v for k, v in table.items() if k != "block_size"} | {"granularity": "per_tensor"}
        where = f"op {op.name!r}" + (f" tensor {tensor!r}" if tensor else "")
        scheme = self._build(table, origins, role, channel_axis, where)
        axis = scheme.channel_axis
        if rank is not None and axis is not None and not -rank <= axis < rank:
            if role == "weight" and not is_compute(op):  # a constant an Add or Mul reads: no channels to keep
                table = {k: v for k, v in table.items() if k not in ("axis", "block_size")}
                return self._build(table | {"granularity": "per_tensor"}, origins, role, None, where)
            source = origins.get("axis", "built-in defaults")
            raise ConfigError(f"{source}: {role}.axis: axis {axis} is outside tensor {tensor!r} of rank {rank} "
                              f"[op {op.name!r}]")
        return scheme

    def set_by_user(self, op, role: str, tensor: str | None, key: str) -> bool:
        """Whether the user's own configuration (its role table or an override), not the platform's defaults, a
        preset or the schema's, gives ``key`` of the scheme of ``tensor`` at ``op``."""
        if role not in ROLES:
            return False
        table, origins = self._table_for(op, role, tensor)
        return table is not None and _users(origins.get(key))

    def overrides_for(self, op, role: str, tensor: str | None) -> list[str]:
        """The labels of the overrides that change the scheme of ``tensor`` in ``role`` at ``op``, in file order
        (``qconfig.toml: override[1]``); none for a bias (its ``mode`` is no scheme)."""
        if role not in ROLES:
            return []
        return [o.label for o in self.overrides if o.scheme_part(role) is not None and o.matches(op, tensor)]

    def scheme_keys(self, op, role: str, tensor: str | None) -> list[str]:
        """Where the scheme of ``tensor`` in ``role`` at ``op`` was asked for: each key that the user's
        configuration, an override of it or a preset set, as its error messages name it
        (``qconfig.toml: activation.bits``, ``qconfig.toml: override[1].weight.bits``)."""
        table, origins = self._table_for(op, role, tensor)
        if table is None:
            return []
        return [f"{source}.{role}.{key}" if ": override[" in source else f"{source}: {role}.{key}"
                for key, source in origins.items() if key in table and source != PLATFORM_SOURCE]

    def _table_for(self, op, role: str, tensor: str | None) -> tuple[dict | None, dict[str, str]]:
        table = getattr(self, role)
        table = dict(table) if table is not None else None
        origins = self._role_origins(role)
        if role == "weight" and table is not None and self.weight_only and op.op_type == "Gather" \
                and not is_expert_stack(op):
            source = self.origins.get("weight_only.embedding_bits", "built-in defaults")
            table, origins = embedding_table(table, origins, self.weight_only, source)
        for override in self.overrides:
            if not override.matches(op, tensor):
                continue
            if override.keep_float:
                return None, {}
            part = override.scheme_part(role)
            if part is not None:
                table, origins = merge_scheme(table, part, lower_origins=origins, source=override.label)
        return table, origins

    def _role_origins(self, role: str) -> dict[str, str]:
        prefix = role + "."
        return {k[len(prefix):]: v for k, v in self.origins.items() if k.startswith(prefix)}

    def _build(self, table: Mapping[str, Any], origins: Mapping[str, str], role: str, axis: int | None,
               where: str) -> QuantScheme:
        try:
            return build_scheme(table, role, axis=axis, default_observer=self._default_observer(role))
        except SchemeConflict as exc:
            keys = [k for k in exc.keys if k in table] or list(table)
            keys.sort(key=lambda k: _blame_rank(origins.get(k, "built-in defaults")))  # the user's key first
            first = keys[0] if keys else ""
            source = origins.get(first, "built-in defaults")
            others = [f"{k} set by {origins.get(k, 'built-in defaults')}" for k in keys
                      if origins.get(k, "built-in defaults") != source]
            extra = f" ({'; '.join(others)})" if others else ""
            path = f"{role}.{first}" if first else role
            raise ConfigError(f"{source}: {path}: {exc}{extra}" + (f" [{where}]" if where else "")) from None

    def _default_observer(self, role: str) -> str:
        return self.calibration["observer"] if role == "activation" else "minmax"

    def _check_schemes(self) -> None:
        """Build every role scheme and every override over it once, so that conflicts show up now."""
        for role in ROLES:
            table = getattr(self, role)
            origins = self._role_origins(role)
            if table is not None:
                self._build(table, origins, role, 0, "")
            for override in self.overrides:
                part = override.scheme_part(role)
                if part is not None and part != "float":
                    merged, merged_origins = merge_scheme(dict(table) if table is not None else None, part,
                                                          lower_origins=origins, source=override.label)
                    self._build(merged, merged_origins, role, 0, "")

    # -- dispatch ----------------------------------------------------------------
    def is_excluded(self, op) -> bool:
        """True when ``op`` must stay float (keep_float override, or exclude glob not re-included)."""
        return self._float_reason(op) is not None

    def quantize_decision(self, op) -> tuple[bool, str]:
        """Whether the config asks for ``op`` to be quantized, and why (for the dispatch report)."""
        reason = self._float_reason(op)
        if reason is not None:
            return False, reason
        include = _first_match(self.include, op.name)
        if include is not None:
            return True, f"included by dispatch.include {include!r}"
        key = "weight_only.op_types" if self.weight_only else "dispatch.quantize_op_types"
        if op.op_type in self.quantize_op_types:
            return True, f"{op.op_type} is in {key}"
        return False, f"{op.op_type} is not in {key}"

    def requested(self, op) -> bool:
        """True when the user's own configuration (not the platform's defaults, a preset or the schema's) asks to
        quantize ``op``: its op type in ``dispatch.quantize_op_types`` or its name in ``dispatch.include``."""
        key = "dispatch.include" if _first_match(self.include, op.name) is not None else "dispatch.quantize_op_types"
        return _users(self.origins.get(key))

    def _float_reason(self, op) -> str | None:
        for override in self.overrides:
            if override.keep_float and override.matches_op(op):
                return f"kept float by {override.label}"
        if _first_match(self.include, op.name) is not None:
            return None
        exclude = _first_match(self.exclude, op.name)
        return f"excluded by dispatch.exclude {exclude!r}" if exclude is not None else None

    def bias_mode_for(self, op) -> str:
        """'int32' or 'float' for the bias of ``op`` (float when the op is excluded)."""
        if self.is_excluded(op):
            return "float"
        mode = self.bias_mode
        for override in self.overrides:
            if override.bias_mode is not None and override.matches_op(op):
                mode = override.bias_mode
        return mode

    def alignment_for(self, op_type: str) -> str | None:
        """The alignment mode of ``op_type`` ('output', 'max', 'none'), None when no group covers it."""
        for group, types in ALIGNMENT_GROUPS.items():
            if op_type in types:
                return self.alignment[group]
        return None

    # -- output ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The configuration as a file-structured dict; resolve_config({}, it) gives an equal config."""
        data: dict[str, Any] = {"preset": self.preset} if self.preset else {}
        for role in ROLES:
            table = getattr(self, role)
            data[role] = dict(table) if table is not None else "float"
        data["bias"] = {"mode": self.bias_mode}
        data["dispatch"] = {"quantize_op_types": sorted(self.quantize_op_types),
                            "passive_op_types": sorted(self.passive_op_types),
                            "between_op_types": sorted(self.between_op_types),
                            "exclude": list(self.exclude), "include": list(self.include),
                            "model_quantization": self.model_quantization}
        data["fusion"] = {"fuse_activations": self.fuse_activations,
                          "activations": sorted(self.fusion_activations),
                          "fused_activations": sorted(self.fused_activations),
                          "float_outputs": sorted(self.float_outputs), "float_unread": self.float_unread,
                          "remove_activations": self.remove_activations}
        data["alignment"] = dict(self.alignment)
        data["calibration"] = dict(self.calibration)
        data["weight_only"] = dict(self.weight_only) if self.weight_only else {"enabled": False}
        data["accuracy"] = {name: {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value
                            for name, value in self.accuracy.items()}
        data["override"] = [o.to_dict() for o in self.overrides]
        data["pass"] = [dict(item) for item in self.passes]
        return data

    def describe(self) -> str:
        """A readable summary for ``qtool explain``."""
        lines = [f"preset: {self.preset or 'none'}"]
        if self.weight_only:
            w = self.weight_only
            lines.append(f"weight only: int{w['bits']} {'symmetric' if w['symmetric'] else 'asymmetric'}, "
                         f"blocks of {w['block_size']} along the input axis")
        lines += [f"{role}: {describe_scheme(getattr(self, role), role, self._default_observer(role))}"
                  for role in ROLES]
        lines.append(f"bias: {self.bias_mode}")
        lines.append(f"quantized op types: {', '.join(sorted(self.quantize_op_types)) or 'none'}")
        lines.append(f"passive op types: {', '.join(sorted(self.passive_op_types)) or 'none'}")
        lines.append(f"between op types: {', '.join(sorted(self.between_op_types)) or 'none'}")
        if self.include or self.exclude:
            lines.append(f"include: {list(self.include)}  exclude: {list(self.exclude)}")
        fused = ", ".join(sorted(self.fusion_activations & self.fused_activations)) if self.fuse_activations else "off"
        lines.append(f"fused activations: {fused}; removed at export: {str(self.remove_activations).lower()}")
        if self.float_outputs:
            lines.append(f"float outputs when no quantized op reads them: {', '.join(sorted(self.float_outputs))}")
        if self.float_unread:
            lines.append("other outputs no quantized op reads: float")
        lines.append("alignment: " + ", ".join(f"{g} = {m}" for g, m in self.alignment.items()))
        lines.append("calibration: " + ", ".join(f"{k} = {v}" for k, v in self.calibration.items()))
        enabled = [name for name, value in self.accuracy.items() if value not in (False, None)]
        lines.append(f"accuracy passes: {', '.join(enabled) or 'none'}")
        lines += [f"override[{i}] {o.describe()}" for i, o in enumerate(self.overrides)]
        return "\n".join(lines)


def _frozen(table: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if table is None else MappingProxyType(dict(table))


def _first_match(globs: tuple[str, ...], name: str) -> str | None:
    return next((g for g in globs if fnmatchcase(name, g)), None)


def _plain(value: Any) -> Any:
    """A config value as a file can hold it: a function (``--metric``) by its name."""
    if callable(value):
        return f"<function {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}>"
    return value


def _users(origin: str | None) -> bool:
    """The origin of a key is the user's own configuration: not the platform's defaults, a preset or the schema."""
    return origin is not None and origin != PLATFORM_SOURCE and not origin.startswith("preset ")


def _blame_rank(source: str) -> int:
    """Which layer a conflict is blamed on first: the user's file, then a preset, platform defaults, built-ins."""
    if source == "built-in defaults":
        return 3
    if source == "platform defaults":
        return 2
    return 1 if source.startswith("preset ") else 0
