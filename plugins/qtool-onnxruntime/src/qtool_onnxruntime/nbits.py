"""Weight-only layers as ONNX Runtime's contrib ops: MatMulNBits (MatMul, Gemm) and GatherBlockQuantized (Gather).

A layer qualifies when its only quantized tensor is its weight, on an integer grid of 4 or 8 bits in
blocks of a power of two >= 16 along the op's input axis (what ``[weight_only]`` configures). Codes are
stored unsigned and packed low bits first into uint8, in ORT's [N, blocks, block bytes] layout; a
symmetric signed grid is shifted by 2^(bits-1), which is ORT's default zero point, so no zero points are
written for it (a block whose positive extreme sits on zero point -1 is written mirrored, with a negative
scale, as ORT's own quantizer writes it: see :func:`pack_rows`). Facts checked against ORT 1.32 on CPU by this plugin's tests:

* MatMulNBits runs 4 and 8 bits with or without uint8 zero points, and a bias input; ``accuracy_level``
  0 (the default) computes in float and matches qtool's simulation, 4 quantizes the float input to int8
  per block inside the kernel (about 1% output error; faster for one-token decode steps, slower for
  prefills of 64-128 tokens on the bench's models);
* GatherBlockQuantized runs uint8-packed 4 and 8-bit tables (gather_axis 0, quantize_axis 1) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qtool.ops import reduction_axis, weight_axis
from qtool.quant import QuantizationPolicy as P
from qtool.quant import quantize_to_codes
from qtool.quant.maths import full_range_blocks

from .configs import active, reader_config
from .storage import MS_DOMAIN

FORMATS = ("matmulnbits", "qdq")
DEFAULT_FORMAT = "matmulnbits"
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
DEFAULT_ACCURACY_LEVEL = 0  # float compute: faster than 4 at prefill on CPU, exact; docs/transformers.md measures
BITS = (4, 8)


@dataclass(frozen=True)
class NBitsLayer:
    """One op written as a contrib op: ``contrib`` is MatMulNBits or GatherBlockQuantized."""

    op: object
    index: int  # the weight input
    tqc: object
    contrib: str


def check_options(extra) -> None:
    """weight_only_format and accuracy_level must be one of their values (ExportOptionError names the option)."""
    from qtool import ExportOptionError

    for key, allowed in (("weight_only_format", FORMATS), ("accuracy_level", ACCURACY_LEVELS)):
        if key in extra and (isinstance(extra[key], bool) or extra[key] not in allowed):
            raise ExportOptionError(f"export option {key!r}: expected one of {', '.join(map(repr, allowed))}, "
                                    f"got {extra[key]!r}")


def weight_only_format(extra) -> str:
    return extra.get("weight_only_format", DEFAULT_FORMAT)


def accuracy_level(extra) -> int:
    return extra.get("accuracy_level", DEFAULT_ACCURACY_LEVEL)


def nbits_layers(graph, settled: bool, form: str = DEFAULT_FORMAT) -> list[NBitsLayer]:
    """The ops the export writes as MatMulNBits / GatherBlockQuantized (none for ``form`` "qdq")."""
    if form != "matmulnbits":
        return []
    found = []
    for op in graph.topological_order():
        layer = _layer(op, settled)
        if layer is not None:
            found.append(layer)
    return found


def _layer(op, settled: bool) -> NBitsLayer | None:
    index = {"MatMul": 1, "Gemm": 1, "Gather": 0}.get(op.op_type)
    if index is None or op.quant is None or not op.quant.quantized or len(op.inputs) <= index:
        return None
    weight = op.inputs[index]
    tqc = reader_config(op, index, settled)
    if tqc is None or weight is None or not weight.is_parameter or np.ndim(weight.value) != 2:
        return None
    others = [t for i, t in enumerate(op.quant.inputs) if i != index and active(t, settled)]
    if others or any(active(t, settled) for t in op.quant.outputs) or not _blocked(tqc.scheme):
        return None
    axis = tqc.scheme.channel_axis % 2
    if op.op_type == "Gather":
        fits = axis == 1 and op.attributes.get("axis", 0) == 0 and weight.value.shape[1] % tqc.scheme.block_size == 0
        return NBitsLayer(op, index, tqc, "GatherBlockQuantized") if fits else None
    if op.op_type == "Gemm" and not _plain_gemm(op, weight):
        return None
    return NBitsLayer(op, index, tqc, "MatMulNBits") if axis == reduction_axis(op, weight.name) else None


def _blocked(scheme) -> bool:
    size = scheme.block_size or 0
    return bool(scheme.policy & P.PER_BLOCK) and not scheme.is_floating and not scheme.policy & P.DYNAMIC \
        and scheme.num_of_bits in BITS and size >= 16 and size & (size - 1) == 0 \
        and scheme.quant_max - scheme.quant_min <= 2 ** scheme.num_of_bits - 1


def _plain_gemm(op, weight) -> bool:
    """Gemm that is A @ W (+ bias of N values): transA 0, alpha 1, beta 1 where a bias is read."""
    a = op.attributes
    if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or op.inputs[0] is None:
        return False
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    if bias is None:
        return True
    n = weight.value.shape[weight_axis(op, weight.name)]
    return float(a.get("beta", 1.0)) == 1.0 and bias.is_parameter and np.shape(bias.value) == (n,)


# -- writing ---------------------------------------------------------------------------
@dataclass
class Packed:
    """A weight as ORT stores it: codes packed [rows, blocks, block bytes], scales and (maybe) zero points."""

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None


def pack_rows(value: np.ndarray, tqc, rows_axis_is_k: bool, chunk: int = 1 << 22) -> Packed:
    """Pack ``value`` (2-D) whose blocks run along axis 0 when ``rows_axis_is_k`` (MatMul [K, N]), else 1; coded
    about ``chunk`` values at a time (an embedding or LM head holds tens of millions)."""
    scheme = tqc.scheme
    bits, block = scheme.num_of_bits, scheme.block_size
    scales = np.asarray(tqc.scale, np.float32)
    offsets = np.broadcast_to(np.asarray(tqc.offset, np.float64), scales.shape)
    shift = 2 ** (bits - 1) if scheme.is_signed else 0
    zero = np.rint(offsets.T if rows_axis_is_k else offsets).astype(np.int64) + shift
    rows, k = value.shape[::-1] if rows_axis_is_k else value.shape
    blocks = -(-k // block)
    padded = np.empty((rows, blocks * block), np.uint8)
    step = max(1, chunk // max(k, 1))
    for start in range(0, rows, step):
        part = np.s_[:, start:start + step] if rows_axis_is_k else np.s_[start:start + step]
        codes = quantize_to_codes(value[part], scheme, scales[part], offsets[part])
        padded[start:start + step, :k] = (codes.T if rows_axis_is_k else codes) + shift
    scales = np.ascontiguousarray((scales.T if rows_axis_is_k else scales).reshape(rows, blocks))
    if full_range_blocks(scheme):
        # ORT's symmetric form: zero point 2^(b-1) everywhere (none written), a block whose extreme is positive
        # (zero point 2^(b-1)-1 here) stored with a negative scale and mirrored codes: (c - z) * s equals
        # ((2^b - 1 - c) - 2^(b-1)) * -s, the codes and scales ORT's matmul_nbits_quantizer writes
        flip = zero == shift - 1
        if flip.any():
            view = padded.reshape(rows, blocks, block)
            view[flip] = np.uint8(2 ** bits - 1) - view[flip]
            scales = np.where(flip, -scales, scales)
            zero = np.where(flip, shift, zero)
    padded[:, k:] = 0  # the last block's padding, as ORT's quantizer writes it (MatMulNBits reads K columns)
    default = np.all(zero == 2 ** (bits - 1))
    return Packed(_pack(padded, bits).reshape(rows, blocks, block * bits // 8), scales,
                  None if default else _pack(_even(zero, bits), bits).reshape(-1))


def _even(values: np.ndarray, bits: int) -> np.ndarray:
    """Rows padded to a whole number of bytes (4-bit zero points of an odd block count)."""
    per_byte = 8 // bits
    pad = (-values.shape[1]) % per_byte
    return np.pad(values, ((0, 0), (0, pad)), constant_values=2 ** (bits - 1)) if pad else values


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes into uint8, low bits first (two 4-bit codes per byte)."""
    codes = codes.astype(np.uint8)
    if bits == 8:
        return codes
    pairs = codes.reshape(codes.shape[0], -1, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


class NBitsRewriter:
    """Replaces the layers' nodes in the QDQ ModelProto by contrib nodes reading packed initializers."""

    def __init__(self, model: onnx.ModelProto, names, level: int) -> None:
        self.model, self.names, self.level = model, names, level

    def rewrite(self, layers: list[NBitsLayer]) -> None:
        if not layers:
            return
        nodes = {node.name: node for node in self.model.graph.node}
        for layer in layers:
            node = nodes[layer.op.name]
            new = self._gather(layer, node) if layer.contrib == "GatherBlockQuantized" else self._matmul(layer, node)
            node.CopyFrom(new)
        read = {n for node in self.model.graph.node for n in node.input} | {o.name for o in self.model.graph.output}
        kept = [t for t in self.model.graph.initializer if t.name in read]
        self.model.graph.ClearField("initializer")
        self.model.graph.initializer.extend(kept)
        if all(o.domain != MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))

    def _initializers(self, stem: str, packed: Packed) -> list[str]:
        out = []
        for suffix, array in (("nbits", packed.codes), ("scales", packed.scales), ("zero_points", packed.zero_points)):
            if array is None:
                out.append("")
                continue
            name = self.names.fresh(f"{stem}_{suffix}")
            self.model.graph.initializer.append(numpy_helper.from_array(array, name))
            out.append(name)
        return out

    def _matmul(self, layer: NBitsLayer, node: onnx.NodeProto) -> onnx.NodeProto:
        op, scheme = layer.op, layer.tqc.scheme
        weight = op.inputs[layer.index]
        transposed = reduction_axis(op, weight.name) == 1  # W stored (N, K): Gemm with transB
        packed = pack_rows(weight.value, layer.tqc, rows_axis_is_k=not transposed)
        n, k = packed.scales.shape[0], weight.value.shape[1 if transposed else 0]
        codes, scales, zero = self._initializers(weight.name, packed)
        inputs = [node.input[0], codes, scales, zero]
        if op.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            inputs += ["", node.input[2]]  # g_idx absent, then the bias
        while inputs[-1] == "":
            inputs.pop()
        return helper.make_node("MatMulNBits", inputs, list(node.output), name=node.name, domain=MS_DOMAIN,
                                K=k, N=n, bits=scheme.num_of_bits, block_size=scheme.block_size,
                                accuracy_level=self.level)

    def _gather(self, layer: NBitsLayer, node: onnx.NodeProto) -> onnx.NodeProto:
        scheme = layer.tqc.scheme
        weight = layer.op.inputs[layer.index]
        packed = pack_rows(weight.value, layer.tqc, rows_axis_is_k=False)
        rows = packed.codes.shape[0]
        packed.codes = packed.codes.reshape(rows, -1)
        if packed.zero_points is not None:
            packed.zero_points = packed.zero_points.reshape(rows, -1)
        codes, scales, zero = self._initializers(weight.name, packed)
        inputs = [codes, node.input[1], scales, zero]
        while inputs[-1] == "":
            inputs.pop()
        return helper.make_node("GatherBlockQuantized", inputs, list(node.output), name=node.name, domain=MS_DOMAIN,
                                gather_axis=0, quantize_axis=1, block_size=scheme.block_size,
                                bits=scheme.num_of_bits)
