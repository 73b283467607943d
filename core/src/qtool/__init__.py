"""qtool: post-training quantization for ONNX models.

The public API, and all a plugin may import (tests/core/test_core_public_api.py
checks every plugin and contrib source file): this package and
:mod:`qtool.quant` (schemes, configs and the quantization plan). What each name
is for: docs/design.md.
"""

__version__ = "0.1.0"

from .config.axes import natural_weight_axis
from .errors import QtoolError, UnknownNameError
from .ir import Graph, GraphError, Operation, Variable, load, save, to_model_proto
from .ir.onnx_export import PROTO_LIMIT, save_model_proto
from .passes.op_roles import weight_index
from .pipeline import QuantizationResult, QuantizeResult, quantize
from .platform import (
    Capabilities,
    Diagnostic,
    ExportOptionError,
    ExportOptions,
    Platform,
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
    Site,
    TensorQuantizationConfig,
    quantized_tensors,
    representable_range,
    round_array,
    sites,
)

__all__ = [
    "PROTO_LIMIT", "Capabilities", "Diagnostic", "ExportOptionError", "ExportOptions", "Graph", "GraphError",
    "OpQuantConfig", "Operation", "Platform", "PluginError", "QtoolError", "QuantScheme", "QuantizationPolicy",
    "QuantizationResult", "QuantizationState", "QuantizeResult", "QuantizedTensor", "RoundingPolicy", "Severity",
    "Site", "TensorQuantizationConfig", "UnknownNameError", "Variable", "__version__", "get_platform", "hookimpl",
    "load", "natural_weight_axis", "quantize", "quantized_tensors", "representable_range", "round_array", "save",
    "save_model_proto", "sites", "to_model_proto", "weight_index", "write_atomic",
]
