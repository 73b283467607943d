"""An ONNX model written part by part: each part's nodes are appended and its tensors streamed to the data file
as the part comes, so the whole model is never in memory (a model of any size; parts come from
:mod:`qtool.ir.segments`). Written atomically: temporary files renamed at :meth:`ModelWriter.finish`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
from onnx import helper

from ..files import folder_lock, make_readable, temporary_beside
from .data_file import raw_bytes, store
from .graph import Graph
from .onnx_export import data_path, value_info


class ModelWriter:
    """``add(part)`` each part's ModelProto in order, then ``finish()``; ``graph`` declares the model's inputs
    and outputs and carries its model-level information."""

    def __init__(self, path: str | os.PathLike, graph: Graph) -> None:
        self.path, self.graph = Path(path), graph
        self.data_name = data_path(self.path).name
        self.tmp_data = temporary_beside(data_path(self.path))  # a name of its own: two runs may share the output
        self.tmp_model = temporary_beside(self.path)
        self.data = open(self.tmp_data, "wb")  # noqa: SIM115 (closed by finish/abort)
        self.nodes: list[onnx.NodeProto] = []
        self.tensors: list[onnx.TensorProto] = []
        self.digests: dict[str, bytes] = {}
        self.computed: set[str] = set()  # node outputs of the parts added so far
        self.node_names: set[str] = set()
        self.opsets: dict[str, int] = dict(graph.info.opset_imports)
        self.ir_version = graph.info.ir_version

    def add(self, part: onnx.ModelProto, tag: str) -> None:
        """Append ``part`` (its tensors in memory); an initializer another part already wrote under the same name
        is written once, or renamed to ``<name>.<tag>`` in this part when its bytes differ; a node or a tensor
        computed by another part under the same name (a boundary tensor quantized at the end of one part and at the
        start of the next writes ``<t>_q`` in both) is renamed to ``<name>.<tag>`` in this part."""
        for opset in part.opset_import:
            self.opsets[opset.domain] = max(self.opsets.get(opset.domain, 0), opset.version)
        self.ir_version = max(self.ir_version, part.ir_version)
        renamed = {}
        for tensor in part.graph.initializer:
            raw = raw_bytes(tensor)
            digest = hashlib.sha256(raw).digest() + bytes(str((tensor.data_type, list(tensor.dims))), "utf-8")
            if self.digests.get(tensor.name, digest) != digest:
                renamed[tensor.name] = tensor.name = f"{tensor.name}.{tag}"
            elif tensor.name in self.digests:
                continue
            self.digests[tensor.name] = digest
            self.tensors.append(store(tensor, raw, self.data, self.data_name) or _detached(tensor))
        renamed.update({name: f"{name}.{tag}" for node in part.graph.node for name in node.output
                        if name in self.computed})
        for node in part.graph.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
            node.output[:] = [renamed.get(name, name) for name in node.output]
            if node.name in self.node_names:
                node.name = f"{node.name}.{tag}"
            self.node_names.add(node.name)
            self.computed.update(node.output)
            self.nodes.append(_detached(node))

    def finish(self) -> list[Path]:
        """Write the model and rename both files into place; returns [model, data], or [model] where every tensor
        stayed in the model (no data file then: an empty one was written, or an earlier run's left beside it)."""
        try:
            external = self.data.tell() > 0
            self.data.close()
            info = self.graph.info
            graph = helper.make_graph(self.nodes, info.graph_name,
                                      [value_info(self.graph, v) for v in self.graph.inputs],
                                      [value_info(self.graph, v) for v in self.graph.outputs],
                                      initializer=self.tensors, doc_string=info.graph_doc_string or None)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
                                      ir_version=self.ir_version, producer_name=info.producer_name,
                                      producer_version=info.producer_version, domain=info.domain,
                                      model_version=info.model_version, doc_string=info.doc_string)
            helper.set_model_props(model, info.metadata_props)
            onnx.save_model(model, self.tmp_model)
            data = self.path.parent / self.data_name
            with folder_lock(self.path.parent):
                if external:
                    os.replace(make_readable(self.tmp_data), data)
                else:
                    self.tmp_data.unlink()
                    data.unlink(missing_ok=True)
                os.replace(make_readable(self.tmp_model), self.path)
        except BaseException:
            self.abort()
            raise
        return [self.path, data] if external else [self.path]

    def abort(self) -> None:
        """Remove the temporary files (nothing is left half-written)."""
        self.data.close()
        self.tmp_data.unlink(missing_ok=True)
        self.tmp_model.unlink(missing_ok=True)


def _detached(message):
    """A copy of a part's message: a message kept from a part keeps the whole part (its tensors) alive."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy
