"""Weight-only layers as ONNX Runtime's contrib ops: MatMulNBits (MatMul, Gemm) and GatherBlockQuantized (Gather).

A layer qualifies when its only quantized tensor is its weight, on an integer grid of 4 or 8 bits in
blocks of a power of two >= 16 along the op's input axis (what ``[weight_only]`` configures). Codes are
stored unsigned and packed low bits first into uint8, in ORT's [N, blocks, block bytes] layout; a
symmetric signed grid is shifted by 2^(bits-1), which is ORT's default zero point, so no zero points are
written for it (a block whose positive extreme sits on zero point -1 is written mirrored, with a negative
scale, as ORT's own quantizer writes it: see :func:`pack_rows`). Facts checked against ORT 1.32 on CPU by this
plugin's tests:

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
from qtool.quant import full_range_blocks, quantize_to_codes

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


def why_not_nbits(op, settled: bool) -> str | None:
    """Why a weight-only op (a MatMul, Gemm or Gather whose only quantized tensor is a constant weight) is not
    written as MatMulNBits / GatherBlockQuantized; None for any other op and for those that are."""
    if op.op_type not in ("MatMul", "Gemm", "Gather") or op.quant is None or not op.quant.quantized:
        return None
    quantized = [i for i, t in enumerate(op.quant.inputs) if active(t, settled)]
    if len(quantized) != 1 or any(active(t, settled) for t in op.quant.outputs) \
            or not op.inputs[quantized[0]].is_parameter or _layer(op, settled) is not None:
        return None
    index, weight = quantized[0], op.inputs[quantized[0]]
    contrib = "GatherBlockQuantized" if op.op_type == "Gather" else "MatMulNBits"
    scheme = reader_config(op, index, settled).scheme
    if op.op_type == "Gather":
        if index != 0 or op.attributes.get("axis", 0) != 0:
            return f"{contrib} gathers rows (axis 0) of a quantized table"
    elif index != 1:
        return f"its weight comes first (W @ x), and {contrib} computes x @ W"
    if np.ndim(weight.value) != 2:
        return f"its weight is {np.ndim(weight.value)}-D, and {contrib} takes a 2-D one"
    if scheme.is_floating:
        return f"its weight is {scheme.short()}, and {contrib} takes 4- or 8-bit integer codes"
    if scheme.num_of_bits not in BITS or scheme.quant_max - scheme.quant_min > 2 ** scheme.num_of_bits - 1:
        wider = "" if scheme.num_of_bits in (2, 16) else (f" (a {scheme.num_of_bits}-bit grid is stored in the next "
                                                          "wider DequantizeLinear type, without its size saving)")
        return f"its weight is {scheme.short()}, and qtool writes {contrib} with 4- or 8-bit codes{wider}"
    if not scheme.policy & P.PER_BLOCK:
        return f"its weight is {scheme.short()}, and {contrib} takes blocks along the input axis"
    size = scheme.block_size or 0
    if size < 16 or size & (size - 1):
        return f"its blocks of {size} are not a power of two from 16, which {contrib} takes"
    if scheme.policy & P.DYNAMIC:
        return f"its weight is quantized at run time, and {contrib} stores codes"
    if op.op_type == "Gather":
        return f"its rows ({weight.value.shape[1]} values) are not a whole number of blocks of {size}"
    if op.op_type == "Gemm" and not _plain_gemm(op, weight):
        return f"it is a Gemm with transA or a computed bias, and {contrib} computes x @ W + a constant bias"
    return f"its weight is blocked along its output axis, and {contrib} blocks the input axis (K)"


def fit_gather_blocks(op, proposal):
    """An embedding table (Gather, axis 0) blocked along its rows whose row length is not a whole number of blocks:
    GatherBlockQuantized refuses it, and as DequantizeLinear -> Gather ORT dequantizes the whole table at every run
    (a one-token step ran 5.9x slower than float on a 32000x320 table at block 128). Blocks of the largest power
    of two that divides the rows (at least 16, below the configured size) instead, with a note (``gather_block``:
    the configured size; ``ort.gather-block-size``), else the table stays float (KeepFloat, saying why)."""
    from qtool import KeepFloat
    from qtool.quant import OpQuantConfig, TensorQuantizationConfig

    table = op.inputs[0] if op.inputs else None
    tqc = proposal.configs.inputs[0] if proposal.configs.inputs else None
    if op.op_type != "Gather" or op.attributes.get("axis", 0) != 0 or tqc is None or table is None \
            or not table.is_parameter or np.ndim(table.value) != 2 or not _blocked(tqc.scheme) \
            or tqc.scheme.channel_axis % 2 != 1:
        return proposal
    block, row = tqc.scheme.block_size, table.value.shape[1]
    if row % block == 0:
        return proposal
    fits = block // 2
    while fits >= 16 and row % fits:
        fits //= 2
    why = (f"the rows of embedding table {table.name!r} ({row} values) are not a whole number of blocks of {block}, "
           "which ORT's GatherBlockQuantized needs; as DequantizeLinear -> Gather, ORT would dequantize the whole "
           "table at every run (a one-token step ran 5.9x slower than float on a 32000x320 table)")
    if fits < 16:
        return KeepFloat(f"{why}: kept float (no power of two from 16 up divides {row})")
    fitted = TensorQuantizationConfig(tqc.scheme.with_changes(block_size=fits), role=tqc.role)
    fitted.notes["gather_block"] = block
    fitted.notes["reason"] = f"blocks of {fits}, not {block}: {why}"
    inputs = [fitted, *proposal.configs.inputs[1:]]
    reason = f"{proposal.reason}; its table in blocks of {fits}, not {block} (GatherBlockQuantized)"
    import dataclasses

    return dataclasses.replace(proposal, reason=reason, configs=OpQuantConfig(
        inputs, list(proposal.configs.outputs), True, reason))


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
    block: int  # the block_size attribute: see written_block


def written_block(k: int, block: int) -> int:
    """The block size a weight of input size ``k`` is written with: ``block``, or where ``k`` fits in half a block,
    the smallest power of two from 16 that holds ``k``. One block either way, so the same scales and codes, without
    the padding (K = 128 at blocks of 256 stored 256 codes per column: an int4 model half again as large as at 128)."""
    return block if k > block // 2 else max(16, 1 << (k - 1).bit_length())


def pack_rows(value: np.ndarray, tqc, rows_axis_is_k: bool, chunk: int = 1 << 22) -> Packed:
    """Pack ``value`` (2-D) whose blocks run along axis 0 when ``rows_axis_is_k`` (MatMul [K, N]), else 1; coded
    about ``chunk`` values at a time (an embedding or LM head holds tens of millions)."""
    scheme = tqc.scheme
    bits = scheme.num_of_bits
    scales = np.asarray(tqc.scale, np.float32)
    offsets = np.broadcast_to(np.asarray(tqc.offset, np.float64), scales.shape)
    shift = 2 ** (bits - 1) if scheme.is_signed else 0
    zero = np.rint(offsets.T if rows_axis_is_k else offsets).astype(np.int64) + shift
    rows, k = value.shape[::-1] if rows_axis_is_k else value.shape
    block = written_block(k, scheme.block_size)
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
                  None if default else _pack(_even(zero, bits), bits).reshape(-1), block)


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
                                K=k, N=n, bits=scheme.num_of_bits, block_size=packed.block,
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
