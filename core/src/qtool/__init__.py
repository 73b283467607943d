"""qtool: post-training quantization for ONNX models.

Public API: :func:`load`, :func:`save`, :class:`Graph`, the quantization
schemes and configs, :class:`Platform` (with :class:`Proposal` / :class:`KeepFloat`
for ``annotate``) and :data:`hookimpl` for plugins, :mod:`qtool.ops` (the op-role table),
:func:`quantize` (the whole pipeline).
"""

__version__ = "0.1.0"

from . import ops
from .errors import QtoolError, UnknownNameError
from .ir import Graph, GraphError, Operation, Variable, load, save
from .ops import OpRoles, op_roles
from .pipeline import QuantizationResult, quantize
from .platform import (
    Capabilities,
    Diagnostic,
    ExportOptions,
    KeepFloat,
    Platform,
    Proposal,
    Severity,
    get_platform,
    write_atomic,
)
from .plugins import PluginError, hookimpl
from .quant import (
    OpQuantConfig,
    QuantizationPolicy,
    QuantizationState,
    QuantizedTensor,
    QuantScheme,
    RoundingPolicy,
    TensorQuantizationConfig,
    quantized_tensors,
    representable_range,
)

__all__ = [
    "Capabilities", "Diagnostic", "ExportOptions", "Graph", "GraphError", "OpQuantConfig", "Operation", "Platform",
    "PluginError", "QtoolError", "QuantScheme", "QuantizationPolicy", "QuantizationState", "RoundingPolicy",
    "Severity", "TensorQuantizationConfig", "UnknownNameError", "Variable", "__version__", "get_platform",
    "hookimpl", "load", "save", "QuantizedTensor", "quantized_tensors", "representable_range",
    "write_atomic", "QuantizationResult", "quantize", "KeepFloat", "Proposal", "OpRoles", "op_roles", "ops",
]
