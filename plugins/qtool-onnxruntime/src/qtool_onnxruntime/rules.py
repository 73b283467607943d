"""validate(): what ONNX Runtime (CPU) does with the QDQ model this platform would write.

ERROR: ORT cannot load or run it. PERFORMANCE: it runs, correctly, through
float kernels. WARNING: it runs, and something differs from what was asked.
int8/uint8 activations (asymmetric int8 included), int8/uint8 per-tensor or
per-channel weights and int32 biases raise nothing.
"""

from __future__ import annotations

from qtool import Diagnostic, ExportOptions
from qtool.ops import is_bias, is_compute
from qtool.quant import QuantizationPolicy as P
from qtool.quant import RoundingPolicy, quantized_tensors

from .activations import clips_exactly, fused_activations
from .bias import misread_reason, weight_requantized
from .codes import CODES
from .configs import active, input_config, output_config
from .half import half_quantized
from .kernels import kernel_verdict
from .nbits import accuracy_level, nbits_layers, weight_only_format, why_not_nbits, written_block
from .opset import target_opset
from .storage import HIGHEST_OPSET, LOWEST_OPSET, placement_problem, storage_type, value_type

NARROW_TYPES = frozenset({"int4", "uint4", "int2", "uint2"})  # no MaxPool kernel in ORT for these
NBITS_TYPES = NARROW_TYPES | {"int8", "uint8"}  # stored weight types ORT 1.32 rewrites into MatMulNBits

SETTLED = False  # validation also runs before calibration


def diagnostic(code: str, message: str, *, op=None, tensor=None, scheme=None) -> Diagnostic:
    return Diagnostic(CODES[code][0], code, message, op=op, tensor=tensor, scheme=scheme.short() if scheme else None)


def validate(graph, options: ExportOptions | None = None) -> list[Diagnostic]:
    options = options or ExportOptions()
    layers = nbits_layers(graph, SETTLED, weight_only_format(options.extra))
    contrib = frozenset(layer.op.name for layer in layers)
    opset = target_opset(graph, options.opset, contrib)
    found = _tensor_rules(graph, opset, contrib) + nbits_rules(layers, accuracy_level(options.extra))
    activations = {act.producer.name: act for act in fused_activations(graph, SETTLED)}
    removable = {name for name, act in activations.items() if options.remove_activations and clips_exactly(act)}
    rewritten = []
    nbits_form = weight_only_format(options.extra) == "matmulnbits"
    for op in graph.topological_order():
        why = why_not_nbits(op, SETTLED) if nbits_form else None
        if is_compute(op) and op.quant is not None and op.quant.quantized and op.name not in contrib:
            nbits = _rewritten_to_nbits(op)
            found += _op_rules(graph, op, activations.get(op.name), op.name in removable, opset, nbits, why)
            if nbits:
                rewritten.append(op)
        elif why is not None and op.op_type == "Gather" and op.quant.inputs[0].scheme.policy & P.PER_BLOCK:
            found.append(_nbits_fallback(op, why, 0, "runs as DequantizeLinear -> Gather, the whole table dequantized "
                                         "at every run"))
        elif is_compute(op) and op.name not in contrib and weight_requantized(graph, op, None, SETTLED):
            found.append(diagnostic("ort.weight-requantized", "ORT quantizes the weight of this op qtool keeps "
                                    "float to int8 per tensor itself (its WeightBiasQuantization pass: the op reads "
                                    "a DequantizeLinear, past data-movement ops its QDQPropagation crosses, and "
                                    "leads to a QuantizeLinear): results differ from qtool's simulation",
                                    op=op.name, tensor=op.inputs[1].name))
        elif op.op_type == "MaxPool":
            found += _maxpool_rules(graph, op)
    if options.remove_activations:
        found += [_kept(act) for name, act in activations.items() if name not in removable]
    if (lifted := half_quantized(graph, SETTLED)) is not None:
        found.append(_float32_compute(*lifted))
    if rewritten:
        found.append(diagnostic("ort.nbits-accuracy-level", f"{len(rewritten)} MatMul/Gemm layer(s) with weights "
                                "stored in 2, 4 or 8 bits: ORT rewrites their DequantizeLinear -> MatMul or Gemm into "
                                "MatMulNBits at its default accuracy level 4, which quantizes the float input to int8 "
                                "per block inside the kernel, so outputs differ from qtool's simulation by about 1% "
                                "(the summary measures a default session; session option "
                                "session.qdq_matmulnbits_accuracy_level = 0 keeps them exact)", op=rewritten[0].name, tensor=rewritten[0].inputs[0].name))
    return found


def _float32_compute(point, dtype) -> Diagnostic:
    """The model computes in float16 or bfloat16 and qtool quantizes its tensors: written in float32 (see .half)."""
    name = dtype.name
    return diagnostic("ort.float32-compute", f"the model computes in {name}: the written model computes in float32, "
                      f"with a Cast after each {name} graph input and before each {name} graph output (a caller feeds "
                      f"and gets {name} as before), since ONNX Runtime's CPU integer kernels take float32 Q/DQ only; "
                      f"its float ops then round less than the {name} model's, and its outputs may lie a step of their "
                      f"grid from qtool's simulation, which computes in {name}", op=point.op.name, tensor=point.tensor)


def _rewritten_to_nbits(op) -> bool:
    """Whether ORT's optimizer makes the written DequantizeLinear -> MatMul (or Gemm, a bias Add after it included) a
    MatMulNBits: a MatMul, or a Gemm reading its weight as stored (transA and transB 0: GPT-2's Conv1D), whose input
    is float or 16-bit (an 8-bit input it leaves to the QDQ fusions) and whose 2-D weight is stored as int2, uint2,
    int4, uint4, int8 or uint8 (so a 1-, 3- or 6-bit grid too), symmetric or not, per tensor, per channel on its
    output axis, or in blocks along its input axis of a power of two from 16 (at most 256 for the 2-bit types).
    Measured on ORT 1.32: per channel on the input axis, blocks along the output axis, blocks of 24, 48 or 8 (or
    of 512 in 2 bits), 16-bit or float8 weights, a 3-D weight and a Gemm with transB 1 stay DequantizeLinear and a
    float op."""
    if op.op_type not in ("MatMul", "Gemm") or len(op.inputs) < 2 or op.inputs[1] is None \
            or not op.inputs[1].is_parameter:
        return False
    if op.op_type == "Gemm" and (op.attributes.get("transA", 0) or op.attributes.get("transB", 0)):
        return False
    data = input_config(op, 0, SETTLED)
    if data is not None and (data.scheme.is_floating or data.scheme.num_of_bits != 16):
        return False
    weight = input_config(op, 1, SETTLED)
    stype = storage_type(weight.scheme, stored=True) if weight is not None else None
    if stype is None or stype.name not in NBITS_TYPES or op.inputs[1].value.ndim != 2:
        return False
    scheme = weight.scheme
    if scheme.policy & P.PER_BLOCK:
        size = scheme.block_size or 0
        return scheme.channel_axis % 2 == 0 and size >= 16 and not size & (size - 1) \
            and (size <= 256 or stype.name not in ("int2", "uint2"))
    return not scheme.is_per_channel or scheme.channel_axis in (1, -1)


def _tensor_rules(graph, opset: int, contrib: frozenset[str]) -> list[Diagnostic]:
    points = [q for q in quantized_tensors(graph, settled=SETTLED) if q.op.name not in contrib]
    if points and not LOWEST_OPSET <= opset <= HIGHEST_OPSET:
        first = points[0]
        return [diagnostic("ort.opset", f"opset {opset} was asked, and ONNX Runtime 1.32 runs QuantizeLinear/"
                           f"DequantizeLinear at opsets {LOWEST_OPSET} to {HIGHEST_OPSET} only",
                           op=first.op.name, tensor=first.tensor)]
    found = []
    for q in points:
        stored = graph.variables[q.tensor].is_parameter
        where = {"op": q.op.name, "tensor": q.tensor, "scheme": q.scheme}
        stype = storage_type(q.scheme, stored=stored)
        if q.scheme.policy & P.DYNAMIC:
            found.append(diagnostic("ort.dynamic", "dynamic quantization (scales computed at run time) is not "
                                    "written by this platform; calibrate the tensor instead", **where))
        elif stype is None:
            found.append(diagnostic("ort.no-qdq-type", f"{q.scheme.short()} fits no Q/DQ type ONNX Runtime runs "
                                    "(int2/int4/int8/int16 and their unsigned forms, float8 e4m3fn/e5m2, and int32 "
                                    "for stored biases)", **where))
        elif (problem := placement_problem(stype, q.scheme, opset, value_type(graph.variables[q.tensor]))) is not None:
            found.append(diagnostic("ort.opset", problem, **where))
        elif not stored:
            found += _activation_warnings(stype, where)
    return found


def nbits_rules(layers, level: int) -> list[Diagnostic]:
    """What ORT does with the MatMulNBits / GatherBlockQuantized layers the export writes."""
    found = [diagnostic("ort.gather-block-size", f"embedding table in blocks of {layer.tqc.scheme.block_size}, not "
                        f"{layer.tqc.notes['gather_block']}: its rows ({layer.op.inputs[0].value.shape[1]} values) "
                        "are not a whole number of blocks of that size, which ORT's GatherBlockQuantized needs (as "
                        "DequantizeLinear -> Gather, ORT would dequantize the whole table at every run: a one-token "
                        "step ran 5.9x slower than float on a 32000x320 table); a little larger, closer to float",
                        op=layer.op.name, tensor=layer.op.inputs[0].name)
             for layer in layers if layer.contrib == "GatherBlockQuantized" and "gather_block" in layer.tqc.notes]
    return found + _padding_rules(layers) + _matmul_rules(layers, level)


def _padding_rules(layers) -> list[Diagnostic]:
    """MatMulNBits layers whose input size K is not a whole number of blocks: the last block is padded."""
    padded = [layer for layer in layers if layer.contrib == "MatMulNBits"
              and _k(layer) % written_block(_k(layer), layer.tqc.scheme.block_size)]
    if not padded:
        return []
    first = padded[0]
    k = _k(first)
    block = written_block(k, first.tqc.scheme.block_size)
    stored = -(-k // block) * block
    fits = block // 2
    while fits >= 16 and k % fits:
        fits //= 2
    hint = f"; blocks of {fits} divide it" if fits >= 16 else ""
    return [diagnostic("ort.nbits-padding", f"{len(padded)} MatMulNBits layer(s) whose input size K is not a whole "
                       f"number of blocks (K = {k}, blocks of {block}): the last block is padded, so each column "
                       f"stores {stored} codes for {k} weights ({100 * (stored - k) / k:.0f}% more){hint}",
                       op=first.op.name, tensor=first.op.inputs[first.index].name)]


def _k(layer) -> int:
    from qtool.ops import reduction_axis

    weight = layer.op.inputs[layer.index]
    return weight.value.shape[reduction_axis(layer.op, weight.name)]


def _matmul_rules(layers, level: int) -> list[Diagnostic]:
    matmuls = [layer for layer in layers if layer.contrib == "MatMulNBits"]
    if not matmuls:
        return []
    if level != 4:
        eight = [layer for layer in matmuls if layer.tqc.scheme.num_of_bits == 8]
        return [] if not eight else [diagnostic(
            "ort.perf.nbits-level", f"{len(eight)} MatMulNBits layer(s) with 8-bit weights at accuracy_level 0: "
            "ORT's CPU kernel dequantizes them block by block into a float product, which ran 1.3-21x slower than "
            "the float model (1 to 512 tokens of 1024x1024 layers, ORT 1.32); export option accuracy_level = 4 "
            "ran 0.3-0.7x float (its input quantized to int8 per block inside the kernel: ort.nbits-accuracy-level)",
            op=eight[0].op.name, tensor=eight[0].op.inputs[eight[0].index].name)]
    first = matmuls[0]
    return [diagnostic("ort.nbits-accuracy-level", f"{len(matmuls)} MatMulNBits layer(s) at accuracy_level 4: ORT "
                       "quantizes their float input to int8 per block inside the kernel (faster on CPU), so outputs "
                       "differ from qtool's simulation by about 1%; export option accuracy_level = 0 computes in "
                       "float and matches it", op=first.op.name, tensor=first.op.inputs[0].name)]


def _activation_warnings(stype, where) -> list[Diagnostic]:
    found = []
    scheme = where["scheme"]
    limits = stype.limits
    if not scheme.is_floating and (scheme.quant_min, scheme.quant_max) != limits:
        found.append(diagnostic("ort.range", f"ORT's QuantizeLinear saturates at the {stype.name} limits "
                                f"[{limits[0]:g}, {limits[1]:g}], not at the scheme's [{scheme.quant_min:g}, "
                                f"{scheme.quant_max:g}]: values beyond the scheme's range differ from qtool's "
                                "simulation", **where))
    if scheme.rounding is not RoundingPolicy.HALF_EVEN:
        found.append(diagnostic("ort.rounding", f"ORT's QuantizeLinear rounds half to even, the scheme rounds "
                                f"{scheme.rounding.value}: values exactly halfway between two codes land one code "
                                "apart from qtool's simulation", **where))
    return found


def _nbits_fallback(op, why: str, index: int, runs: str) -> Diagnostic:
    contrib = "GatherBlockQuantized" if op.op_type == "Gather" else "MatMulNBits"
    return diagnostic("ort.perf.nbits-fallback", f"weight-only layer not written as {contrib}: {why}; it {runs}",
                      op=op.name, tensor=op.inputs[index].name)


def _op_rules(graph, op, activation, removed: bool, opset: int, nbits: bool,
              why: str | None = None) -> list[Diagnostic]:
    """The op's errors and notes; ``nbits``: ORT runs it as the MatMulNBits it makes of it (see
    :func:`_rewritten_to_nbits`), not through a float op; ``why``: why a weight-only layer is not written as
    MatMulNBits (:func:`.nbits.why_not_nbits`), said instead of the integer kernels' reasons."""
    verdict = kernel_verdict(graph, op, activation, removed, SETTLED, opset)
    found = [diagnostic(e.code, e.reason, op=op.name, tensor=e.tensor) for e in verdict.errors]
    if verdict.blockers and why is not None:
        runs = (f"runs as the MatMulNBits ONNX Runtime makes of its DequantizeLinear -> {op.op_type} "
                "(ort.nbits-accuracy-level)" if nbits else
                f"runs as DequantizeLinear -> float {op.op_type}, the whole weight dequantized at every run")
        found.append(_nbits_fallback(op, why, 1 if op.op_type != "MatMul" or op.inputs[1].is_parameter else 0, runs))
    elif verdict.blockers:
        first = verdict.blockers[0]
        if nbits:
            how = (f"runs as the MatMulNBits ONNX Runtime makes of its DequantizeLinear -> {op.op_type} "
                   "(ort.nbits-accuracy-level), not as a QDQ integer kernel: ")
        else:
            after = " -> QuantizeLinear" if output_config(graph, op, 0, SETTLED) is not None else ""
            how = f"runs correctly through DequantizeLinear -> float {op.op_type}{after}, slower than an integer kernel: "
        found.append(diagnostic(first.code, how + "; ".join(b.reason for b in verdict.blockers), op=op.name,
                                tensor=first.tensor))
    if weight_requantized(graph, op, activation, SETTLED):
        found.append(diagnostic("ort.weight-requantized", "ORT quantizes this float weight to int8 per tensor "
                                "itself (its WeightBiasQuantization pass, for a Conv/Gemm between DequantizeLinear "
                                "and QuantizeLinear): results differ from qtool's simulation, which keeps it float",
                                op=op.name, tensor=op.inputs[1].name))
    for index, tqc in enumerate(op.quant.inputs):
        if is_bias(op, index) and op.inputs[index].is_parameter and active(tqc, settled=True) \
                and (reason := misread_reason(op, tqc)) is not None:  # a computed bias has its own Q/DQ pair
            found.append(diagnostic("ort.bias-float", f"bias written as float values on its grid (same numbers): "
                                    f"{reason}, and ORT's QLinearConv/QGemm would read its int32 codes as if "
                                    "scale = s_in * s_w and zero point = 0", op=op.name,
                                    tensor=op.inputs[index].name, scheme=tqc.scheme))
    return found


def _maxpool_rules(graph, op) -> list[Diagnostic]:
    """A MaxPool between two pairs of one 4- or 2-bit type: ORT's default optimizations drop the pairs around it
    (MaxPool commutes with quantization) and find no MaxPool kernel for that type, so the session fails to load."""
    before, after = input_config(op, 0, SETTLED), output_config(graph, op, 0, SETTLED)
    if before is None or after is None:
        return []
    types = {getattr(storage_type(tqc.scheme, stored=False), "name", None) for tqc in (before, after)}
    if len(types) != 1 or not types <= NARROW_TYPES:
        return []
    return [diagnostic("ort.kernel-type", f"ORT's optimizer removes the {types.pop()} QuantizeLinear/"
                       "DequantizeLinear pairs around this MaxPool, and ORT has no MaxPool kernel for that type: "
                       "the session fails to load at the default optimization level", op=op.name,
                       tensor=op.inputs[0].name)]


def _kept(act) -> Diagnostic:
    tqc = act.config
    lo, hi = act.bounds
    return diagnostic("ort.activation-kept", f"{act.op.op_type} kept: quantizing its output with "
                      f"{tqc.scheme.short()} does not clip exactly at [{lo:g}, {hi:g}] (the bounds do not quantize "
                      "to the lowest and highest code), so dropping it would change results",
                      op=act.op.name, tensor=act.op.outputs[0].name, scheme=tqc.scheme)
