"""QuantizeFusion: one quantization point per fused pattern, passive ops sharing their input's config.

* A computing op whose output is read only by a fused activation (Relu,
  Clip...: ``fusion.activations`` that are also ``fusion.fused_activations``,
  or any of them after an op that writes float, see below) does not quantize
  that output: both the op's output config and the
  activation's input config become FP32 ("fused with <act>"); the activation's
  output carries the quantization. Other activations keep both sides quantized.
* A quantized passive op (MaxPool, Reshape...) overlaps its data inputs with
  their producers' outputs and, with a single data input, its outputs with it.
* A computing op of ``fusion.float_outputs`` whose output no quantized op
  reads keeps that output float ("float output: no quantized op reads it"):
  the runtime's integer kernel writes float (ONNX Runtime's
  MatMulIntegerToFloat), without the rounding and the Q/DQ pair nobody needed.
  Not for a weight first (W @ x): that kernel takes a per-tensor first input.
  Not when a lone Add reads it and the shapes let a runtime fold MatMul + Add
  into a float Gemm (ONNX Runtime's MatMulAddFusion) before it looks for
  integer kernels (``qtool.ops.folds_into_gemm``).
* With ``fusion.float_unread``, the output of any other quantized op (an
  activation, an Add...) on the way to the graph outputs, which no quantized op
  reads, directly, through data-movement ops or after float ops, stays float,
  and so do those data-movement ops: a detector head's Sigmoid -> Reshape ->
  Transpose before float box arithmetic was rounded to 8 bits for no integer
  kernel. Mid-graph (a squeeze-excitation's HardSwish read by a float
  ReduceMean and Mul, then by Convs) the rounding stays: floated there,
  mobilenetv3-mini's output lost 5 dB, though every tensor in between gained.
"""

from __future__ import annotations

from ..ir import Graph, Operation
from ..ops import folds_into_gemm, is_compute
from ..quant import QuantizationState
from .base import Pass, PassResult
from .dispatch import producer_config


UNREAD = "float output: no quantized op reads it"


class QuantizeFusion(Pass):
    name = "QuantizeFusion"

    def __init__(self, config) -> None:
        self.config = config

    def call(self, graph: Graph) -> PassResult:
        fused, shared = [], []
        for op in graph.topological_order():
            if op.quant is None or not op.quant.quantized:
                continue
            if _fusible(self.config, op) and _fuse(graph, op):
                fused.append(f"{op.inputs[0].producer.name} + {op.name}")
            elif is_passive(self.config, op):
                shared += _share_passive(op)
        floated = [op.name for op in graph.topological_order() if _float_output(self.config, op)]
        if self.config.float_unread:
            floated += [op.name for op in graph.topological_order() if _float_unread(self.config, graph, op)]
        return PassResult(graph, bool(fused or shared or floated), {"fused": fused, "shared": shared,
                                                                    "float_outputs": floated})


def _fusible(config, op: Operation) -> bool:
    """An activation fused into its producer: one of ``fused_activations``, or any after an op that writes float."""
    if not config.fuse_activations or op.op_type not in config.fusion_activations:
        return False
    producer = op.inputs[0].producer if op.inputs and op.inputs[0] is not None else None
    return op.op_type in config.fused_activations or producer is not None and _writes_float(config, producer)


def _writes_float(config, op: Operation) -> bool:
    """``op`` has an integer kernel with float output: a ``float_outputs`` type, activation first, not folded
    with a bias Add into a float Gemm."""
    return op.op_type in config.float_outputs and not op.inputs[0].is_parameter and not folds_into_gemm(op)


def is_passive(config, op: Operation) -> bool:
    """A quantized data-movement op that shares its input's quantization."""
    return op.op_type in config.passive_op_types and op.op_type not in config.quantize_op_types


def _fuse(graph: Graph, act: Operation) -> bool:
    source = act.inputs[0]
    reader, written = act.quant.inputs[0], producer_config(source)
    producer = source.producer if source is not None else None
    if reader is None or written is None or act.quant.outputs[0] is None:
        return False
    if len(source.consumers) != 1 or source in graph.outputs or written.state is not QuantizationState.INITIAL:
        return False
    if producer.quant is None or not producer.quant.quantized:
        return False
    for tqc in (written, reader):
        tqc.keep_float(f"fused with {act.name}")
    return True


def _share_passive(op: Operation) -> list[str]:
    shared = []
    data = [i for i, tqc in enumerate(op.quant.inputs) if tqc is not None]
    for i in data:
        written, reader = producer_config(op.inputs[i]), op.quant.inputs[i]
        if written is not None and written.state is not QuantizationState.FP32 and written.scheme == reader.scheme:
            reader.overlap(written)
            shared.append(f"{op.name}:{op.inputs[i].name}")
    if len(data) == 1:
        for j, out in enumerate(op.quant.outputs):
            if out is not None and out.scheme == op.quant.inputs[data[0]].scheme:
                out.overlap(op.quant.inputs[data[0]])
                shared.append(f"{op.name}:{op.outputs[j].name}")
    return shared


def _float_output(config, op: Operation) -> bool:
    """Keep ``op``'s output float when its type writes float outputs and no quantized op reads it."""
    if op.quant is None or not op.quant.quantized:
        return False
    written = op.quant.outputs[0] if op.quant.outputs else None
    if written is None or written.state is not QuantizationState.INITIAL or not _writes_float(config, op):
        return False
    if read_quantized(op.outputs[0]):
        return False
    written.keep_float(UNREAD)
    return True


def _float_unread(config, graph: Graph, op: Operation) -> bool:
    """Keep float the output of ``op`` (no compute nor data-movement op) and the data-movement ops after it when
    no quantized op reads them."""
    if op.quant is None or not op.quant.quantized or is_compute(op) or is_passive(config, op) or len(op.outputs) != 1:
        return False
    if _ends_fused_kernel(config, op):
        return False
    written = op.quant.outputs[0]
    if written is None or written.state is not QuantizationState.INITIAL:
        return False
    passed = _passed_on(config, graph, op.outputs[0])
    if passed is None:
        return False
    for tqc in (written, *passed):
        tqc.keep_float(UNREAD)
    return True


def _ends_fused_kernel(config, op: Operation) -> bool:
    """``op`` is an activation fused into the compute op before it, whose integer kernel writes ``op``'s
    quantized output (QLinearConv with its Relu): that output is the kernel's, read or not."""
    source = op.inputs[0] if op.inputs else None
    producer = source.producer if source is not None else None
    reader = op.quant.inputs[0] if op.quant.inputs else None
    return (producer is not None and is_compute(producer) and not _writes_float(config, producer)
            and reader is not None and reader.state is QuantizationState.FP32)


def _passed_on(config, graph: Graph, var) -> list | None:
    """The configs of the data-movement ops (one data input each) that pass ``var`` on, and of their outputs, when
    only float readers and graph outputs take it in the end; None when a quantized op reads it (or may: an output
    of a part of a model quantized by parts, which a later part reads)."""
    if _read_later(graph, var):
        return None
    configs = []
    for reader in dict.fromkeys(var.consumers):
        reads = [tqc for v, tqc in zip(reader.inputs, reader.quant.inputs if reader.quant else [], strict=False)
                 if v is var and tqc is not None and tqc.state is not QuantizationState.FP32]
        if not reads:
            if _feeds_quantized(graph, reader):  # mid-graph it stays: floated, mobilenetv3-mini lost 5 dB
                return None
            continue
        data = [tqc for tqc in reader.quant.inputs if tqc is not None]
        if not is_passive(config, reader) or len(data) != 1:
            return None
        configs += reads
        for out, tqc in zip(reader.outputs, reader.quant.outputs, strict=False):
            if tqc is not None and tqc.state is not QuantizationState.FP32:
                further = _passed_on(config, graph, out)
                if further is None:
                    return None
                configs += [tqc, *further]
    return configs


def _feeds_quantized(graph: Graph, op: Operation) -> bool:
    """Whether a quantized op reads anything computed from ``op``'s outputs (its forward cone), or may (a later
    part of a model quantized by parts)."""
    seen, pending = {op.name}, [out for out in op.outputs if out is not None]
    while pending:
        var = pending.pop()
        if read_quantized(var) or _read_later(graph, var):
            return True
        for reader in var.consumers:
            if reader.name not in seen:
                seen.add(reader.name)
                pending += [out for out in reader.outputs if out is not None]
    return False


def _read_later(graph: Graph, var) -> bool:
    """``var`` is an output of a part of a model (``--by-blocks``): a later part reads it, maybe quantized."""
    return graph.part_of is not None and var in graph.outputs


def read_quantized(var) -> bool:
    """Whether some op reads ``var`` through a quantized (not FP32) input config."""
    for reader in dict.fromkeys(var.consumers):
        configs = reader.quant.inputs if reader.quant is not None else []
        if any(v is var and tqc is not None and tqc.state is not QuantizationState.FP32
               for v, tqc in zip(reader.inputs, configs, strict=False)):
            return True
    return False
