"""The calibrated-state sidecar: every op's quantization configs as versioned JSON.

``save_state`` records, per op, whether it is quantized and each input/output
TQC (scheme, state, scale, offset, and for overlapped configs a reference to
the config that owns the parameters). ``load_state`` puts them back on a graph
of the same model so that export can run without calibrating again.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import QtoolError
from .files import write_atomic
from .quant import TQC, OpQuantConfig, QuantizationPolicy, QuantizationState, QuantScheme, RoundingPolicy
from .quant.maths import fake_quantize
from .quant.opconfig import FALLBACK_FLOAT
from .quant.plan import UNBAKED

FORMAT_VERSION = 1
SIDES = ("inputs", "outputs")


class StateError(QtoolError, ValueError):
    """A state file that cannot be read, or that does not fit the graph; names the file, op and tensor."""


# -- save ---------------------------------------------------------------------------
def save_state(graph, path: str | os.PathLike, *, config, data_fingerprint: str | None) -> Path:
    """Write the graph's quantization state to ``path`` (JSON, atomically); return the path."""
    owners = {id(tqc): (op.name, side, i) for op in graph.operations.values() if op.quant is not None
              for side in SIDES for i, tqc in enumerate(getattr(op.quant, side)) if tqc is not None}
    ops = {op.name: _op_record(op, owners) for op in graph.topological_order()}
    data = {"format_version": FORMAT_VERSION, "qtool_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "data_fingerprint": data_fingerprint, "config": config.to_dict() if config is not None else None,
            "ops": ops}
    return write_atomic(path, json.dumps(data, indent=1) + "\n")


def _op_record(op, owners: dict[int, tuple[str, str, int]]) -> dict[str, Any]:
    record: dict[str, Any] = {"op_type": op.op_type}
    if op.quant is None:
        return record
    record.update(quantized=op.quant.quantized, reason=op.quant.reason)
    for side in SIDES:
        variables = getattr(op, side)
        record[side] = [None if tqc is None else _tqc_record(tqc, variables[i], owners, f"op {op.name!r} {side}[{i}]")
                        for i, tqc in enumerate(getattr(op.quant, side))]
    return record


def _tqc_record(tqc: TQC, var, owners, where: str) -> dict[str, Any]:
    scheme = tqc.scheme
    record: dict[str, Any] = {
        "tensor": var.name if var is not None else None, "role": tqc.role, "state": tqc.state.value,
        "policy": [f.name for f in QuantizationPolicy if f in scheme.policy],
        "bits": scheme.num_of_bits, "quant_min": _number(scheme.quant_min, scheme),
        "quant_max": _number(scheme.quant_max, scheme), "exponent_bits": scheme.exponent_bits,
        "axis": scheme.channel_axis, "block_size": scheme.block_size, "rounding": scheme.rounding.value,
        "observer": scheme.observer,
    }
    if tqc.role == "weight" and var is not None and var.is_parameter:
        record["digests"] = list(dict.fromkeys(_digest(v) for v in (var.float_value, var.value) if v is not None))
    settled = tqc.dominator.is_settled  # a passive rule may not be computable before that
    record["scale"], record["offset"] = (_listed(tqc.scale), _listed(tqc.offset)) if settled else (None, None)
    if tqc.is_overlapped:
        owner = owners.get(id(tqc.dominator))
        if owner is None:
            raise StateError(f"{where}: overlapped with a config that belongs to no op; cannot save it")
        record["dominator"] = {"op": owner[0], "side": owner[1], "index": owner[2]}
    elif tqc.is_passive:
        record["passive"] = True
    return record


def _digest(value: np.ndarray) -> str:
    """A weight's type, shape and a CRC-32 of its bytes. A state records its float values' and, once baked, its
    values on the grid (a model written with baked weights takes the state too), so that a state is not restored
    onto another model's weights of the same names (their saved scales clipped them)."""
    value = np.ascontiguousarray(value)
    return f"{value.dtype}{list(value.shape)}:{zlib.crc32(value.tobytes()):08x}"


def _number(value, scheme: QuantScheme):
    return float(value) if scheme.is_floating else int(value)


def _listed(value) -> Any:
    return None if value is None else np.asarray(value).tolist()


# -- load ---------------------------------------------------------------------------
def load_state(graph, path: str | os.PathLike) -> dict[str, Any]:
    """Restore the configs saved in ``path`` onto ``graph`` and return the file's contents.

    Ops without configs get new ones; ops that already have configs must have
    the same schemes, and receive the saved states and parameters. A config
    saved as BAKED whose tensor here is not on its grid is restored as
    ACTIVATED (PASSIVE for PASSIVE_BAKED), so that Baking can run again.
    """
    path = Path(path)
    data = _read(path)
    records = data["ops"]
    _check_ops(graph, records, path)
    restored: dict[tuple[str, str, int], TQC] = {}
    links: list[tuple[TQC, dict, str]] = []
    for name, record in records.items():
        _restore_op(graph, graph.operations[name], record, path, restored, links)
    for tqc, ref, where in links:
        target = restored.get((ref["op"], ref["side"], ref["index"]))
        if target is None:
            raise StateError(f"{path}: {where}: dominator {ref['op']!r} {ref['side']}[{ref['index']}] has no config")
        state = tqc.state
        try:
            tqc.overlap(target)
        except ValueError as exc:
            raise StateError(f"{path}: {where}: {exc}") from None
        tqc.restore_state(state)
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(f"{path}: no such state file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: not a readable state file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("ops"), dict):
        raise StateError(f"{path}: not a qtool state file (no 'ops' table)")
    if data.get("format_version") != FORMAT_VERSION:
        raise StateError(f"{path}: state format_version {data.get('format_version')!r} is not supported "
                         f"(this qtool reads {FORMAT_VERSION})")
    return data


def _check_ops(graph, records: dict[str, Any], path: Path) -> None:
    unknown = [n for n in records if n not in graph.operations]
    missing = [n for n in graph.operations if n not in records]
    if unknown or missing:
        parts = [f"ops not in the model: {_names(unknown)}" if unknown else "",
                 f"ops not in the state file: {_names(missing)}" if missing else ""]
        raise StateError(f"{path}: state does not match the model; " + "; ".join(p for p in parts if p))
    for name, record in records.items():
        if record.get("op_type") != graph.operations[name].op_type:
            raise StateError(f"{path}: op {name!r} is a {graph.operations[name].op_type} in the model but a "
                             f"{record.get('op_type')} in the state file")


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _restore_op(graph, op, record: dict[str, Any], path: Path, restored: dict, links: list) -> None:
    dispatched = op.quant is not None  # then the graph's configs must agree with the file
    if "inputs" not in record:
        if dispatched:
            raise StateError(f"{path}: op {op.name!r} has configs in the graph but none in the state file")
        return
    if not dispatched:
        op.quant = OpQuantConfig([None] * len(op.inputs), [None] * len(op.outputs))
    elif op.quant.quantized != record["quantized"] and not _fallback_float(record):
        raise StateError(f"{path}: op {op.name!r} is {_quantized(op.quant.quantized)} in the graph but "
                         f"{_quantized(record['quantized'])} in the state file")
    op.quant.quantized, op.quant.reason = record["quantized"], record["reason"]
    for side in SIDES:
        variables, configs, saved = getattr(op, side), getattr(op.quant, side), record[side]
        if len(saved) != len(variables) or len(configs) != len(variables):
            raise StateError(f"{path}: op {op.name!r} has {len(variables)} {side} in the model, "
                             f"{len(saved)} in the state file")
        for i, item in enumerate(saved):
            where = f"op {op.name!r} {side}[{i}]"
            if dispatched and (configs[i] is None) != (item is None):
                who = ("the graph", "the state file") if item is None else ("the state file", "the graph")
                bias = "bias" in (item or {}).get("role", "") or configs[i] is not None and configs[i].role == "bias"
                why = " (an int32 bias: bias.mode, or the platform, differs from the state's)" if bias else ""
                raise StateError(f"{path}: {where}: {who[0]} quantizes this tensor, {who[1]} does not{why}")
            if item is None:
                configs[i] = None
                continue
            var = variables[i]
            if side == "inputs" and _private_copy(graph, var, item["tensor"]):  # a pass copied a shared weight
                var = graph.private_parameter(op, i, item["tensor"])
            if (var.name if var is not None else None) != item["tensor"]:
                raise StateError(f"{path}: {where}: tensor {item['tensor']!r} in the state file, "
                                 f"{var.name if var is not None else None!r} in the model")
            configs[i] = _restore_tqc(configs[i], item, var, f"{where} tensor {item['tensor']!r}", path)
            restored[(op.name, side, i)] = configs[i]
            if "dominator" in item:
                links.append((configs[i], item["dominator"], where))


def _private_copy(graph, var, saved_name: str | None) -> bool:
    """Whether the state names, in place of ``var``, a copy of it that the graph does not hold yet: the
    parameters that several ops read (or the graph outputs) are copied for one of them when a pass changes them."""
    return (var is not None and var.is_parameter and saved_name is not None and saved_name != var.name
            and saved_name not in graph.variables and graph.is_shared(var))


def _fallback_float(record: dict[str, Any]) -> bool:
    """The op is float in the state because the sensitivity fallback measured it so (dispatch quantizes it)."""
    return not record["quantized"] and str(record.get("reason") or "").startswith(FALLBACK_FLOAT)


def _quantized(flag: bool) -> str:
    return "quantized" if flag else "float"


def _restore_tqc(tqc: TQC | None, item: dict[str, Any], var, where: str, path: Path) -> TQC:
    if "digests" in item and var is not None and var.is_parameter and _digest(var.value) not in item["digests"]:
        raise StateError(f"{path}: {where}: the model's weight is not the one the state was saved with (another "
                         "model, or other weights under the same names): its saved scales do not fit; calibrate it "
                         "anew")
    scheme = _scheme(item, where, path)
    if tqc is None:
        tqc = TQC(scheme, role=item["role"])
    elif tqc.scheme != scheme or tqc.role != item["role"]:
        raise StateError(f"{path}: {where}: the graph's {tqc.role} scheme {tqc.scheme.short()} differs from "
                         f"the saved {item['role']} scheme {scheme.short()}{_differences(tqc.scheme, scheme)}")
    state = QuantizationState(item["state"])
    if "dominator" in item:  # linked once every config is restored
        tqc.restore_state(state)
        return tqc
    params = None
    if item["scale"] is not None:
        params = _params(item, scheme, where, path)
        if state in UNBAKED and not _on_grid(var, scheme, *params):
            state = UNBAKED[state]
    if item.get("passive"):
        tqc.make_passive(lambda: params or (None, None))
    elif params is not None:
        tqc.set_params(*params)
    tqc.restore_state(state)
    return tqc


def _differences(ours: QuantScheme, saved: QuantScheme) -> str:
    """The fields two schemes differ in where their short forms do not show it (the observer, the rounding)."""
    if ours.short() != saved.short():
        return ""
    fields = [f"{f.name} {getattr(ours, f.name)!s} here, {getattr(saved, f.name)!s} saved"
              for f in dataclasses.fields(QuantScheme) if getattr(ours, f.name) != getattr(saved, f.name)]
    return f" ({'; '.join(fields)})" if fields else ""


def _params(item: dict[str, Any], scheme: QuantScheme, where: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved scale and offset, checked: scales finite and positive, integer offsets within the code range (a
    hand-edited NaN scale was written as 1e-45, an offset of 1000 on uint8 as 232)."""
    try:
        scale = np.asarray(item["scale"], dtype=np.float64)
        offset = np.asarray(item["offset"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StateError(f"{path}: {where}: the saved scale and offset must be numbers ({exc})") from None
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise StateError(f"{path}: {where}: the saved scales must be finite and positive, got {scale.ravel()[:4]}")
    if not np.isfinite(offset).all() or not scheme.is_floating and (
            (offset != np.round(offset)).any() or (offset < scheme.quant_min).any()
            or (offset > scheme.quant_max).any()):
        raise StateError(f"{path}: {where}: the saved offsets must be codes of {scheme.short()}, got "
                         f"{offset.ravel()[:4]}")
    return scale.astype(np.float32), offset.astype(np.float32 if scheme.is_floating else np.int32)


def _scheme(item: dict[str, Any], where: str, path: Path) -> QuantScheme:
    try:
        policy = QuantizationPolicy(0)
        for name in item["policy"]:
            policy |= QuantizationPolicy[name]
        return QuantScheme(policy, item["bits"], item["quant_min"], item["quant_max"], item["exponent_bits"],
                           item["axis"], item["block_size"], RoundingPolicy(item["rounding"]), item["observer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise StateError(f"{path}: {where}: invalid saved scheme ({exc})") from exc


def _on_grid(var, scheme: QuantScheme, scale: np.ndarray, offset: np.ndarray) -> bool:
    """True when ``var`` holds a value that quantization leaves unchanged (already baked)."""
    if var is None or not var.is_parameter:
        return True
    value = np.array(var.value, dtype=np.float32)
    return bool(np.array_equal(fake_quantize(value, scheme, scale, offset), value))
