"""qtool: post-training quantization for ONNX models.

Public API: :func:`load`, :func:`save`, :class:`Graph`, the quantization
schemes and configs, :class:`Platform` and :data:`hookimpl` for plugins,
:func:`quantize` (the whole pipeline), :func:`analyse` and :func:`explain` (reports, HTML too).
"""

__version__ = "0.1.0"

from .errors import QtoolError, UnknownNameError
from .ir import Graph, GraphError, Operation, Variable, load, save
from .pipeline import QuantizationResult, quantize
from .platform import Capabilities, Diagnostic, ExportOptions, Platform, Severity, get_platform, write_atomic
from .plugins import PluginError, hookimpl
from .report import AnalysisReport, Explanation, analyse, explain
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
    "write_atomic", "QuantizationResult", "quantize", "AnalysisReport", "Explanation", "analyse", "explain",
]
