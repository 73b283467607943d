"""Calibrated graphs built by hand: explicit schemes, made-up but fixed activation ranges.

For testing exporters and validators without running calibration: the
numbers are deterministic (ranges derive from tensor names, weight scales from
the weights), not accurate.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..ops import weight_axis
from ..errors import UnknownNameError
from ..quant import OpQuantConfig, QuantScheme, TensorQuantizationConfig, compute_scale_offset
from ..quant import QuantizationState as S

DEFAULT_OP_TYPES = frozenset({"Add", "Conv", "ConvTranspose", "Gemm", "MatMul", "Relu"})
INT8 = QuantScheme.integer(8)
INT8_PER_CHANNEL = QuantScheme.integer(8, per_channel=True, channel_axis=0)


def made_up_range(name: str) -> tuple[float, float]:
    """A fixed range for tensor ``name``: min in [-4, -0.5], max in [0.5, 4]."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return -float(rng.uniform(0.5, 4.0)), float(rng.uniform(0.5, 4.0))


def quantize_by_hand(graph, activation: QuantScheme | None = INT8, weight: QuantScheme | None = INT8_PER_CHANNEL,
                     *, bias: str = "float", op_types=DEFAULT_OP_TYPES, settled: bool = True):
    """Quantize every op of ``op_types`` in ``graph`` (in place) and return the graph.

    Activations (op inputs that are not parameters, and outputs) get
    ``activation`` with :func:`made_up_range`; weights get ``weight`` (its
    channel axis set per op) from their min/max; ``bias`` "int32" makes bias
    configs passive (scale = s_in * s_w), "float" leaves biases float. A reader
    whose scheme equals the producer's is overlapped with it. Other ops run float.
    ``settled`` False stops where dispatch stops: configs INITIAL (bias
    PASSIVE_INIT) without parameters, overlaps in place, for readers of saved
    parameters to fill.
    """
    produced: dict[str, TensorQuantizationConfig] = {}
    for op in graph.topological_order():
        if op.op_type not in op_types:
            op.quant = OpQuantConfig.float_op(len(op.inputs), len(op.outputs), "not a quantized op type")
            continue
        inputs = [_activation(var, activation, produced, settled) if var is not None and not var.is_parameter
                  else None for var in op.inputs]
        w = op.inputs[1] if len(op.inputs) > 1 else None
        if w is not None and w.is_parameter and weight is not None:
            inputs[1] = _weight(w, weight, weight_axis(op, w.name), settled)
        if len(op.inputs) > 2 and op.inputs[2] is not None and bias == "int32" and inputs[0] and inputs[1]:
            inputs[2] = _bias(inputs[0], inputs[1], settled)
        outputs = [_activation(var, activation, produced, settled) for var in op.outputs]
        produced.update({var.name: tqc for var, tqc in zip(op.outputs, outputs, strict=True) if tqc is not None})
        op.quant = OpQuantConfig(inputs, outputs, reason="quantized by hand")
    return graph


def retarget(graph, tensor: str, scheme: QuantScheme) -> None:
    """Give every config of ``tensor`` ``scheme`` and fresh parameters (from the made-up range or the weight)."""
    touched = 0
    for op in graph.operations.values():
        if op.quant is None:
            continue
        for variables, configs in ((op.inputs, op.quant.inputs), (op.outputs, op.quant.outputs)):
            for var, tqc in zip(variables, configs, strict=False):
                if var is not None and var.name == tensor and tqc is not None and not tqc.is_passive:
                    tqc.scheme = scheme
                    if not tqc.is_overlapped:
                        tqc.set_params(*_params(var, scheme))
                    touched += 1
    if not touched:
        raise UnknownNameError(f"tensor {tensor!r} has no quantization config in this graph")


def _params(var, scheme: QuantScheme):
    """Parameters covering a weight's min/max (per channel when asked) or an activation's made-up range."""
    if not var.is_parameter:
        return compute_scale_offset(scheme, *made_up_range(var.name))
    data = np.asarray(var.value, dtype=np.float64)
    if scheme.block_size is not None:
        return compute_scale_offset(scheme, *_block_min_max(data, scheme.channel_axis, scheme.block_size))
    if scheme.is_per_channel:
        rows = np.moveaxis(data, scheme.channel_axis, 0).reshape(data.shape[scheme.channel_axis], -1)
        return compute_scale_offset(scheme, rows.min(axis=1), rows.max(axis=1))
    return compute_scale_offset(scheme, data.min(), data.max())


def _block_min_max(data: np.ndarray, axis: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max per block of ``block`` entries along ``axis`` (the last block may be short)."""
    blocks = -(-data.shape[axis] // block)
    pad = [(0, 0)] * data.ndim
    pad[axis] = (0, blocks * block - data.shape[axis])
    padded = np.pad(data, pad, constant_values=np.nan)
    grouped = padded.reshape(data.shape[:axis] + (blocks, block) + data.shape[axis + 1:])
    return np.nanmin(grouped, axis=axis + 1), np.nanmax(grouped, axis=axis + 1)


def _activation(var, scheme, produced, settled: bool) -> TensorQuantizationConfig | None:
    if scheme is None:
        return None
    tqc = TensorQuantizationConfig(scheme)
    owner = produced.get(var.name)
    if owner is not None and owner.scheme == scheme:
        tqc.overlap(owner)
    elif settled:
        tqc.set_params(*_params(var, scheme))
    return tqc


def _weight(var, scheme: QuantScheme, axis: int, settled: bool) -> TensorQuantizationConfig:
    if scheme.is_per_channel and scheme.block_size is None:  # per-block schemes keep their own axis
        scheme = scheme.with_changes(channel_axis=axis)
    tqc = TensorQuantizationConfig(scheme, role="weight")
    if settled:
        tqc.set_params(*_params(var, scheme))
    return tqc


def _bias(activation: TensorQuantizationConfig, weight: TensorQuantizationConfig,
          settled: bool) -> TensorQuantizationConfig:
    per_channel = weight.scheme.is_per_channel
    scheme = QuantScheme.integer(32, per_channel=per_channel, channel_axis=0 if per_channel else None)
    tqc = TensorQuantizationConfig(scheme, S.PASSIVE_INIT, role="bias")
    if not settled:
        return tqc

    def rule():
        s = np.asarray(activation.scale, np.float32) * np.asarray(weight.scale, np.float32)
        return s.astype(np.float32), np.zeros(s.shape, np.int32)

    tqc.make_passive(rule)
    return tqc
