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
from onnx import helper

from ..ir import Graph, Operation
from ..ir.onnx_export import node_proto
from ..ort_schemas import ort_can_run  # noqa: F401 (support imports it from here)

if TYPE_CHECKING:  # the op library and torch: imported by the executor, not by who only asks ort_can_run
    import torch

    from .ops.registry import OpContext

FALLBACK_REASON = "no executor kernel: run float by ONNX Runtime"


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
        self.output_names = [f"qtool_fallback_out{j}" if name else "" for j, name in enumerate(node.output)]
        del node.input[:], node.output[:]
        node.input.extend(self.input_names)
        node.output.extend(self.output_names)
        self.node, self.info, self.name = node, graph.info, op.name
        self._sessions: dict[tuple, ort.InferenceSession] = {}

    def __call__(self, ctx: OpContext, attrs: dict, inputs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        from .feeds import to_numpy, to_tensor  # torch: imported by the executor, not by who only asks ort_can_run

        names = [n for n in self.input_names if n] + self.outer
        present = [t for i, t in enumerate(inputs) if i >= self.explicit or self.input_names[i]]
        feeds = {name: to_numpy(t) for name, t in zip(names, present, strict=True)}
        session = self._session(feeds)
        wanted = [n for n in self.output_names if n]
        results = dict(zip(wanted, session.run(wanted, feeds), strict=True))
        return [to_tensor(np.asarray(results[n]), ctx.device) if n else None for n in self.output_names]

    def _session(self, feeds: dict[str, np.ndarray]) -> ort.InferenceSession:
        key = tuple((a.dtype.str, a.ndim) for a in feeds.values())
        if key not in self._sessions:
            self._sessions[key] = self._build(feeds)
        return self._sessions[key]

    def _build(self, feeds: dict[str, np.ndarray]) -> ort.InferenceSession:
        inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                list(a.shape) if name in self.fixed else
                                                [f"{name}_d{k}" for k in range(a.ndim)])
                  for name, a in feeds.items()]
        outputs = [onnx.ValueInfoProto(name=n) for n in self.output_names if n]
        graph = helper.make_graph([self.node], f"fallback_{self.name}", inputs, outputs)
        opsets = [helper.make_opsetid(d, v) for d, v in self.info.opset_imports.items()]
        ir_version = max(self.info.ir_version, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: qtool reports a failure with its own error, ORT's message in it
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

