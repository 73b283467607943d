"""Graph IR and ONNX import/export."""

from .graph import Graph, GraphError, ModelInfo, Operation, Variable
from .onnx_export import (
    PROTO_LIMIT,
    data_path,
    save,
    save_files,
    save_model_files,
    save_model_proto,
    shape_only_tensor,
    to_model_proto,
)
from .onnx_import import from_model_proto, load, outer_references, rename_outer_reads
from .streamed_model import fill_values

__all__ = ["PROTO_LIMIT", "Graph", "GraphError", "ModelInfo", "Operation", "Variable", "fill_values",
           "from_model_proto", "load", "outer_references", "rename_outer_reads", "save", "save_files",
           "save_model_files", "save_model_proto", "shape_only_tensor", "to_model_proto"]
