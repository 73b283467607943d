"""Graph IR and ONNX import/export."""

from .graph import Graph, GraphError, ModelInfo, Operation, Variable
from .onnx_export import save, to_model_proto
from .onnx_import import from_model_proto, load, outer_references

__all__ = ["Graph", "GraphError", "ModelInfo", "Operation", "Variable", "from_model_proto", "load",
           "outer_references", "save", "to_model_proto"]
