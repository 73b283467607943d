"""Rewrite a float ModelProto into QDQ form from the calibrated graph's configs.

* An activation gets QuantizeLinear -> DequantizeLinear: one pair for its
  producer's config (every reader then reads it), one more per reader config
  with another dominator. A graph output keeps its name: the DequantizeLinear
  writes it and the producer's float output becomes ``<name>_float``.
* A parameter is stored as codes plus a DequantizeLinear, once per distinct
  scheme and parameters; float readers keep the float initializer.
* A bias ORT's integer kernels would misread (see :mod:`.bias`) becomes float
  values on its grid.
* Removed Relu/Clip: their node is dropped and their output's pair reads their input.
* A Relu right before a QuantizeLinear that ORT's Relu fusion mishandles goes
  after that pair instead (see :func:`.activations.relu_fusion_breaks`).
* A ReduceMean over every spatial axis between an 8-bit pair becomes the
  GlobalAveragePool it computes, which ORT runs as an integer kernel (see :mod:`.pools`).
* From opset 21 on, a data-movement op reading an int8 pair gets the pair ORT's
  QDQPropagation would move there (see :mod:`.moved_pairs`), written by the export.

Names: ``<t>_q`` (codes), ``<t>_scale``, ``<t>_zero_point``, ``<t>_dq``
(dequantized values), nodes ``<t>_QuantizeLinear`` / ``<t>_DequantizeLinear``;
``<t>_<reader op>_...`` for the extra pairs of one tensor.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qtool import outer_references, rename_outer_reads
from qtool.ops import bias_input, is_bias, reads_shape_only
from qtool.quant import QuantizationPolicy as P
from qtool.quant import (
    QuantScheme,
    TensorQuantizationConfig,
    dequantize_codes,
    quantize_to_codes,
    reader_config,
    round_to_float_format,
    sites,
)

from .activations import on_grid, relu_fusion_breaks
from .bias import misread_reason, saturating_float_bias_scale
from .errors import OnnxRuntimeExportError
from .pools import global_pools
from .storage import MS_DOMAIN, SHAPE_READABLE, domain_at, storage_type, value_type

SETTLED = True  # export writes calibrated configs only


class Names:
    """Fresh names that clash with no tensor or node of the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.used = {n for node in g.node for n in (*node.input, *node.output, node.name)}
        self.used |= {v.name for v in (*g.input, *g.output, *g.value_info, *g.initializer)}

    def fresh(self, base: str) -> str:
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name


class QdqWriter:
    """Collects the new nodes and initializers, then rebuilds the model's node list."""

    def __init__(self, graph, model: onnx.ModelProto, opset: int, removed: dict[str, str],
                 skip: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.graph, self.model, self.opset = graph, model, opset
        self.skip = skip  # (op name, input index) another writer stores (see .nbits)
        self.removed = removed  # dropped activation op name -> its input tensor name
        self.alias = {graph.operations[op].outputs[0].name: source for op, source in removed.items()}
        self.names = Names(model)
        self.first: list[onnx.NodeProto] = []  # parameter DQs and graph-input pairs
        self.after: dict[str, list[onnx.NodeProto]] = {}  # by the tensor whose producer they follow
        self.reads: dict[tuple[str, int], str] = {}  # (node name, input index) -> tensor read instead
        self.renamed: dict[str, str] = {}  # producer output renames (graph outputs)
        self.initializers: list[onnx.TensorProto] = []
        self.domains: set[str] = set()

    def write(self) -> onnx.ModelProto:
        placed = list(sites(self.graph, SETTLED))
        for var, found in groupby((s for s in placed if s.kind == "parameter"), lambda s: s.tensor):
            self._parameter(var, list(found))
        self._wide_biases()
        for var, found in groupby((s for s in placed if s.kind != "parameter"), lambda s: s.tensor):
            self._activation(var, list(found))
        self._rebuild()
        return self.model

    # -- activations ---------------------------------------------------------
    def _activation(self, var, pairs) -> None:
        """The pairs of one activation (its producer's first, when it has one); each site's readers read it."""
        anchor = self.alias.get(var.name, var.name)
        source = self.renamed.get(anchor, anchor)
        for number, site in enumerate(pairs):
            if site.kind == "producer":
                exposed = var in self.graph.outputs
                if exposed and source == var.name:
                    source = self.renamed[var.name] = self.names.fresh(f"{var.name}_float")
                out = var.name if exposed else self.names.fresh(f"{var.name}_dq")
                codes = self._pair(anchor, source, out, site.config, var.name, value_type(var))
                self._read(site.readers, out, codes, site.config)
                source = out  # extra pairs quantize the producer pair's values
                continue
            stem = f"{var.name}_{site.readers[0][0].name}" if number else var.name  # the first pair: plain names
            out = self.names.fresh(f"{stem}_dq")
            codes = self._pair(anchor, source, out, site.config, stem, value_type(var))
            self._read(site.readers, out, codes, site.config)

    def _read(self, readers, values: str, codes: str, tqc) -> None:
        """The readers read the dequantized ``values``; a Shape or Size reads the ``codes`` where ORT has a kernel
        for their type, so that the DequantizeLinear serves integer kernels alone and ONNX Runtime fuses it away
        (a Shape reading it kept it running in float: 9 of a small GPT-2's 30)."""
        shape_reads_codes = storage_type(tqc.scheme).name in SHAPE_READABLE
        self.reads.update({(op.name, index): codes if shape_reads_codes and reads_shape_only(op, index) else values
                           for op, index in readers})

    def _pair(self, anchor: str, source: str, out: str, tqc, stem: str, values: np.dtype) -> str:
        """QuantizeLinear -> DequantizeLinear from ``source`` to ``out``; the codes' name."""
        scale, zero, attrs, domain = self._params(tqc, stem, stored=False, values=values)
        codes = self.names.fresh(f"{stem}_q")
        nodes = [helper.make_node("QuantizeLinear", [source, scale, zero], [codes], domain=domain or None,
                                  name=self.names.fresh(f"{stem}_QuantizeLinear"), **attrs),
                 helper.make_node("DequantizeLinear", [codes, scale, zero], [out], domain=domain or None,
                                  name=self.names.fresh(f"{stem}_DequantizeLinear"), **attrs)]
        if anchor in {v.name for v in self.graph.inputs}:
            self.first += nodes
        else:
            self.after.setdefault(anchor, []).extend(nodes)
        return codes

    # -- parameters ------------------------------------------------------------
    def _wide_biases(self) -> None:
        """Float biases ORT would saturate as int32 codes at s_in * s_w (see bias.saturating_float_bias_scale)."""
        for op in self.graph.topological_order():
            index = bias_input(op)
            scale = saturating_float_bias_scale(op, index) if index is not None else None
            if scale is None or reader_config(op, index, SETTLED) is not None:
                continue
            tqc = TensorQuantizationConfig(QuantScheme.integer(32, per_channel=True, channel_axis=0), role="bias")
            tqc.set_params(scale, np.zeros(scale.shape, np.int32))
            self.reads[(op.name, index)] = self._stored(op.inputs[index], tqc, op.inputs[index].name)

    def _parameter(self, var, copies) -> None:
        stored: dict[tuple, str] = {}  # configs with equal parameters share one copy
        for (op, index), tqc in ((site.readers[0], site.config) for site in copies):
            if (op.name, index) in self.skip:
                continue
            on_grid = is_bias(op, index) and misread_reason(op, tqc) is not None
            key = (on_grid, tqc.scheme, _bytes(tqc.scale), _bytes(tqc.offset))
            if key not in stored:
                stem = var.name if not stored else f"{var.name}_{op.name}"
                stored[key] = self._on_grid(var, tqc, stem) if on_grid else self._stored(var, tqc, stem)
            self.reads[(op.name, index)] = stored[key]

    def _stored(self, var, tqc, stem: str) -> str:
        stype = _storage(tqc.scheme, stem, stored=True)
        codes = self.names.fresh(f"{stem}_q")
        self.initializers.append(numpy_helper.from_array(stored_codes(var.value, tqc, stype.dtype), codes))
        scale, zero, attrs, domain = self._params(tqc, stem, stored=True, values=value_type(var))
        out = self.names.fresh(f"{stem}_dq")
        self.first.append(helper.make_node("DequantizeLinear", [codes, scale, zero], [out], domain=domain or None,
                                           name=self.names.fresh(f"{stem}_DequantizeLinear"), **attrs))
        return out

    def _on_grid(self, var, tqc, stem: str) -> str:
        scheme = tqc.scheme
        values = dequantize_codes(quantize_to_codes(var.value, scheme, tqc.scale, tqc.offset), scheme, tqc.scale,
                                  tqc.offset)
        out = self.names.fresh(f"{stem}_dq")
        self.initializers.append(numpy_helper.from_array(values.astype(value_type(var)), out))
        return out

    def _params(self, tqc, stem: str, stored: bool, values: np.dtype) -> tuple[str, str, dict, str]:
        """Scale and zero-point initializers (same shape), Q/DQ attributes and domain (``values``: the float type of
        the tensor in the written model)."""
        scheme = tqc.scheme
        stype = _storage(scheme, stem, stored)
        domain = domain_at(stype, scheme, self.opset, values) or ""  # None: validate() reports an error
        self.domains.add(domain)
        scale = float32_scale(tqc.scale)
        attrs = {}
        if scheme.policy & P.PER_BLOCK:
            attrs = {"axis": scheme.channel_axis, "block_size": scheme.block_size}
        elif scheme.is_per_channel:
            attrs, scale = {"axis": scheme.channel_axis}, scale.reshape(-1)
        elif scale.size == 1:
            scale = scale.reshape(())
        else:
            raise OnnxRuntimeExportError(f"tensor {stem!r}: a per-tensor scheme with {scale.size} scales")
        zero = np.broadcast_to(np.asarray(tqc.offset, dtype=np.float64), scale.shape)
        zero = np.zeros(scale.shape, stype.dtype) if stype.float_format else np.rint(zero).astype(stype.dtype)
        names = self.names.fresh(f"{stem}_scale"), self.names.fresh(f"{stem}_zero_point")
        self.initializers += [numpy_helper.from_array(scale, names[0]), numpy_helper.from_array(zero, names[1])]
        return names[0], names[1], attrs, domain

    # -- assembly ----------------------------------------------------------------
    def _rebuild(self) -> None:
        g = self.model.graph
        moved = self._moved_reads()
        nodes = list(self.first)
        for node in g.node:
            if node.name in self.removed:
                continue
            op = self.graph.operations.get(node.name)
            for index, name in enumerate(node.input):
                if op is None:
                    node.input[index] = moved.get(name, name)
                elif _reads_as_planned(op, index, name):
                    node.input[index] = self.reads.get((node.name, index), name)
            self._subgraph_reads(node)
            originals = list(node.output)
            for index, name in enumerate(originals):
                node.output[index] = self.renamed.get(name, name)
            nodes.append(node)
            for name in originals:
                nodes += self.after.get(name, [])
        g.ClearField("node")
        constants = {t.name: t for t in (*g.initializer, *self.initializers)}
        g.node.extend(global_pools(self._relus_after_pairs(nodes), self.graph, constants))
        g.initializer.extend(self.initializers)
        read = {n for node in g.node for n in (*node.input, *outer_references(node))} | {o.name for o in g.output}
        kept = [t for t in g.initializer if t.name in read]
        dropped = {t.name for t in g.initializer} - {t.name for t in kept}
        g.ClearField("initializer")
        g.initializer.extend(kept)
        # a weight also listed as a graph input (IR 3 lists every initializer so) goes from the inputs with its
        # float initializer: left there, it was an input nothing provides (ONNX Runtime refused the model)
        inputs = [i for i in g.input if i.name not in dropped]
        g.ClearField("input")
        g.input.extend(inputs)
        if MS_DOMAIN in self.domains and all(o.domain != MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))

    def _moved_reads(self) -> dict[str, str]:
        """Tensors a node read in qtool's graph and reads no more in the converted model, which put new nodes in
        front of it (an opset-11 Softmax became Reshape(Softmax(Flatten(x)), Shape(x))), with the pair output the
        node was to read: the new nodes read it in its place."""
        moved = {}
        for node in self.model.graph.node:
            op = self.graph.operations.get(node.name)
            for index, name in enumerate(node.input):
                read = self.reads.get((node.name, index))
                if op is not None and read is not None and not _reads_as_planned(op, index, name):
                    moved[op.inputs[index].name] = read
        return moved

    def _subgraph_reads(self, node: onnx.NodeProto) -> None:
        """A control-flow node's subgraphs read the pair's output of an outer tensor as its explicit inputs do
        (the op's trailing inputs are what its subgraphs read, as qtool simulates them)."""
        op = self.graph.operations.get(node.name)
        if op is None or not op.subgraph_refs:
            return
        explicit = len(op.inputs) - len(op.subgraph_refs)
        renamed = {op.inputs[index].name: self.reads[(node.name, index)]
                   for index in range(explicit, len(op.inputs)) if (node.name, index) in self.reads}
        rename_body_reads(node, renamed)

    def _relus_after_pairs(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Relu/Clip -> QuantizeLinear -> DequantizeLinear becomes QuantizeLinear -> DequantizeLinear -> Relu/Clip
        where ORT's fusion goes wrong (see activations.relu_fusion_breaks); the same numbers either way."""
        zero_points = {t.name: t for t in self.initializers}
        quantizers = {n.input[0]: n for n in nodes if n.op_type == "QuantizeLinear"}
        dequantizers = {n.input[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
        readers = Counter(name for node in nodes for name in node.input)
        outputs = {o.name for o in self.model.graph.output}
        result = list(nodes)
        for act in [n for n in nodes if n.op_type in ("Relu", "Clip")]:
            q = quantizers.get(act.output[0])
            if q is None or readers[act.output[0]] != 1 or act.output[0] in outputs \
                    or not relu_fusion_breaks(q.domain, zero_points.get(q.input[2])) \
                    or not self._constant_bounds(act):
                continue
            dq = dequantizers[q.output[0]]
            read_by_all = dq.output[0]  # readers keep this name; the activation now writes it
            q.input[0] = act.input[0]
            dq.output[0] = self.names.fresh(f"{q.output[0]}_dq")
            act.input[0], act.output[0] = dq.output[0], read_by_all
            if act.op_type == "Clip":
                self._bounds_on_grid(act, zero_points[q.input[1]], zero_points[q.input[2]])
            result.remove(act)
            result.insert(result.index(dq) + 1, act)
        return result

    def _constant_bounds(self, act: onnx.NodeProto) -> bool:
        """A Relu, or a Clip whose bounds are absent or initializers (ORT fuses only those)."""
        constants = {t.name for t in (*self.model.graph.initializer, *self.initializers)}
        return all(name in ("", *constants) for name in act.input[1:])

    def _bounds_on_grid(self, clip: onnx.NodeProto, scale: onnx.TensorProto, zero_point: onnx.TensorProto) -> None:
        """Give a Clip moved after its pair the grid values of its bounds (inputs from opset 11, else attributes)."""
        constants = {t.name: t for t in (*self.model.graph.initializer, *self.initializers)}
        for index, key in ((1, "min"), (2, "max")):
            if self.opset < 11:
                attribute = next((a for a in clip.attribute if a.name == key), None)
                if attribute is not None:
                    attribute.f = float(on_grid(attribute.f, scale, zero_point))
            elif index < len(clip.input) and clip.input[index]:
                bound = numpy_helper.to_array(constants[clip.input[index]])
                name = self.names.fresh(f"{clip.input[index]}_on_grid")
                self.initializers.append(numpy_helper.from_array(
                    on_grid(float(bound), scale, zero_point).astype(bound.dtype).reshape(bound.shape), name))
                clip.input[index] = name


def rename_body_reads(node: onnx.NodeProto, renamed: dict[str, str]) -> None:
    """``node``'s subgraphs read the outer tensors ``renamed`` names by their new names."""
    for attr in node.attribute:
        for body in (*([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []), *attr.graphs):
            rename_outer_reads(body, renamed)


def float32_scale(scale) -> np.ndarray:
    """``scale`` in float32, the type of the values of every Q/DQ this platform writes (a float16 or bfloat16 model
    is written in float32, see .half; validation refuses float64 ones); a scale below its smallest positive value
    takes that value, never zero."""
    converted = np.asarray(scale, dtype=np.float32)
    return np.where(converted > 0, converted, np.finfo(np.float32).smallest_subnormal).astype(np.float32)


def _storage(scheme, stem: str, stored: bool):
    stype = storage_type(scheme, stored=stored)
    if stype is None:  # validate() reports ort.no-qdq-type
        raise OnnxRuntimeExportError(f"tensor {stem!r}: no Q/DQ type stores {scheme.short()}")
    return stype


def _bytes(value) -> tuple:
    array = np.asarray(value)
    return array.shape, array.dtype.str, array.tobytes()


def per_element(param, shape: tuple[int, ...], scheme) -> np.ndarray:
    """A scale or zero point spread over a tensor of ``shape`` (per tensor, channel or block)."""
    p = np.asarray(param, dtype=np.float64)
    if p.size == 1 and not scheme.is_per_channel:
        return np.broadcast_to(p.reshape(()), shape)
    axis = scheme.channel_axis % len(shape)
    if scheme.policy & P.PER_BLOCK:
        return np.repeat(p, scheme.block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    layout = [1] * len(shape)
    layout[axis] = -1
    return np.broadcast_to(p.reshape(layout), shape)


def stored_codes(value: np.ndarray, tqc, dtype: np.dtype) -> np.ndarray:
    """The codes of a parameter in its storage dtype: integers, or float8 values (value / scale, on the format)."""
    scheme = tqc.scheme
    if not scheme.is_floating:
        return quantize_to_codes(value, scheme, tqc.scale, tqc.offset).astype(dtype)
    ratio = np.asarray(value, np.float64) / per_element(tqc.scale, value.shape, scheme)
    on_format = round_to_float_format(ratio, scheme.exponent_bits, scheme.mantissa_bits, scheme.quant_max,
                                      scheme.rounding)
    return on_format.astype(dtype)



def _reads_as_planned(op, index: int, name: str) -> bool:
    """The converted model's node of ``op`` reads at ``index`` the tensor ``op`` reads in qtool's graph."""
    source = op.inputs[index] if index < len(op.inputs) else None
    return source is None or source.name == name
