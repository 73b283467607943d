"""Ops without an executor kernel run in float through ONNX Runtime, one session per node and input signature.

The node is wrapped in a one-node model (the graph's opsets and local functions,
inputs typed by the tensors it is called with); tensors outer-scope references
of its subgraphs read are inputs of that model too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ..ir import Graph, Operation
from ..ir.onnx_export import node_proto
from ..ort_schemas import ort_can_run  # noqa: F401 (support imports it from here)

if TYPE_CHECKING:  # the op library and torch: imported by the executor, not by who only asks ort_can_run
    import torch

    from .ops.registry import OpContext

FALLBACK_REASON = "no executor kernel: run float by ONNX Runtime"

_FLOAT8 = (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ)
# Types ONNX Runtime's Python API neither takes nor returns as numpy arrays (int4: 'No corresponding Numpy type';
# ml_dtypes' bfloat16 and float 8 arrays: 'Numpy_type can't be converted'; float 8 comes back as its bytes in
# uint8), and the type a fallback session exchanges them in: the container the executor holds them in, with a Cast
# inside the session's model, exact both ways (every value of the one is a value of the other). Each with the
# opset its Cast takes it from.
_EXCHANGED = {TensorProto.INT4: (TensorProto.INT8, 21), TensorProto.UINT4: (TensorProto.UINT8, 21),
              TensorProto.INT2: (TensorProto.INT8, 25), TensorProto.UINT2: (TensorProto.UINT8, 25),
              TensorProto.FLOAT4E2M1: (TensorProto.FLOAT, 23), TensorProto.BFLOAT16: (TensorProto.FLOAT, 13),
              **{t: (TensorProto.FLOAT, 19) for t in _FLOAT8}}
_ORT_TYPE_NAMES = {f"tensor({TensorProto.DataType.Name(t).lower()})": t for t in _EXCHANGED}


class OrtNode:
    """An op function (``fn(ctx, attrs, inputs)``) running ``op`` in an onnxruntime session."""

    def __init__(self, op: Operation, graph: Graph) -> None:
        node = node_proto(op)
        self.explicit = len(node.input)
        self.outer = [v.name for v in op.inputs[self.explicit:]]
        self.input_names = [f"qtool_fallback_in{i}" if name else "" for i, name in enumerate(node.input)]
        # a parameter's shape never changes: declared whole, for contrib ops whose shape inference needs it (an
        # EmbedLayerNormalization's word_embedding "should have 2 dimensions and dimension size is known")
        self.fixed = {self.input_names[i] for i, var in enumerate(op.inputs[:self.explicit])
                      if var is not None and var.is_parameter and self.input_names[i]}
        self.fixed |= {var.name for var in op.inputs[self.explicit:] if var.is_parameter}
        self.output_names = [f"qtool_fallback_out{j}" if name else "" for j, name in enumerate(node.output)]
        del node.input[:], node.output[:]
        node.input.extend(self.input_names)
        node.output.extend(self.output_names)
        self.node, self.info, self.name = node, graph.info, op.name
        self._sessions: dict[tuple, ort.InferenceSession] = {}

    def __call__(self, ctx: OpContext, attrs: dict, inputs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        from .feeds import to_numpy, to_value  # torch: imported by the executor, not by who only asks ort_can_run

        names = [n for n in self.input_names if n] + self.outer
        declared = list(ctx.input_types) + [None] * (len(inputs) - len(ctx.input_types))
        present = [(t, declared[i]) for i, t in enumerate(inputs) if i >= self.explicit or self.input_names[i]]
        arrays = [to_numpy(tensor) for tensor, _ in present]
        element_types = _element_types(arrays, [dtype for _, dtype in present])
        feeds, types = {}, {}
        for name, array, element_type in zip(names, arrays, element_types, strict=True):
            types[name] = element_type
            if element_type in _EXCHANGED:
                name, array = _wide(name), array.astype(helper.tensor_dtype_to_np_dtype(_EXCHANGED[element_type][0]))
            feeds[name] = array
        session, narrow = self._session(feeds, types)
        wanted = [n for n in self.output_names if n]
        results = dict(zip(wanted, session.run(wanted, feeds), strict=True))
        for name, element_type in narrow.items():  # bfloat16 and float 8 back to their own type; int4... stay wide
            if element_type == TensorProto.BFLOAT16 or element_type in _FLOAT8:
                results[name] = results[name].astype(helper.tensor_dtype_to_np_dtype(element_type))
        return [to_value(results[n], ctx.device) if n else None for n in self.output_names]

    def _session(self, feeds: dict[str, np.ndarray], types: dict[str, int]) -> tuple[ort.InferenceSession, dict]:
        key = tuple((types[n], a.ndim) for n, a in zip(types, feeds.values(), strict=True))
        if key not in self._sessions:
            session = self._build(feeds, types, {})
            narrow = {o.name: _ORT_TYPE_NAMES[o.type] for o in session.get_outputs() if o.type in _ORT_TYPE_NAMES}
            self._sessions[key] = (self._build(feeds, types, narrow) if narrow else session), narrow
        return self._sessions[key]

    def _build(self, feeds: dict[str, np.ndarray], types: dict[str, int], narrow: dict[str, int]
               ) -> ort.InferenceSession:
        """A session of the node alone; an input or output of a type in ``_EXCHANGED`` (``narrow``: the outputs)
        is the session's in the wider type, through a Cast."""
        node, casts, needed = onnx.NodeProto(), [], 0
        node.CopyFrom(self.node)
        inputs = []
        for (feed, a), (name, element_type) in zip(feeds.items(), types.items(), strict=True):
            shape = list(a.shape) if name in self.fixed else [f"{name}_d{k}" for k in range(a.ndim)]
            inputs.append(helper.make_tensor_value_info(feed, helper.np_dtype_to_tensor_dtype(a.dtype), shape))
            if feed != name:
                casts.append(_cast(feed, name, element_type))
                needed = max(needed, _EXCHANGED[element_type][1])
        for j, name in enumerate(node.output):
            if name in narrow:
                node.output[j] = _wide(name)
                casts.append(_cast(_wide(name), name, _EXCHANGED[narrow[name]][0]))
                needed = max(needed, _EXCHANGED[narrow[name]][1])
        outputs = [onnx.ValueInfoProto(name=n) for n in self.output_names if n]
        nodes = [c for c in casts if c.output[0] in types] + [node] + [c for c in casts if c.output[0] not in types]
        graph = helper.make_graph(nodes, f"fallback_{self.name}", inputs, outputs)
        imports = dict(self.info.opset_imports)
        if self.node.domain not in ("", "ai.onnx") and imports.get("", 0) < needed:  # a contrib op's int4: the Cast's
            imports[""] = needed
        opsets = [helper.make_opsetid(d, v) for d, v in imports.items()]
        ir_version = max(self.info.ir_version, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: qtool reports a failure with its own error, ORT's message in it
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _element_types(arrays: list[np.ndarray], declared: list) -> list[int]:
    """The ONNX type the node reads for each input: the graph's declaration where it is a narrow type the executor
    held in its container (int4 in int8), else the array's own. A tensor the model computes in a narrow type and
    declares none for (a QuantizeLinear's int4 output) takes the one narrow type the node's declared inputs hold
    in that container: the type its zero point binds it to, in a DequantizeLinear."""
    from .feeds import NARROW

    narrow = [np.dtype(d) if d is not None and NARROW.get(np.dtype(d)) == a.dtype else None
              for a, d in zip(arrays, declared, strict=True)]
    types = []
    for array, dtype, own in zip(arrays, declared, narrow, strict=True):
        if own is None and dtype is None:
            bound = {n for n in narrow if n is not None and NARROW[n] == array.dtype}
            own = bound.pop() if len(bound) == 1 else None
        types.append(helper.np_dtype_to_tensor_dtype(own if own is not None else array.dtype))
    return types


def _wide(name: str) -> str:
    return f"{name}_qtool_wide"


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    """An exact Cast (float 8 without saturation: its values are all on the grid, an infinity stays one)."""
    extra = {"saturate": 0} if to in _FLOAT8 else {}
    return helper.make_node("Cast", [source], [target], to=to, **extra)
