"""qtool: post-training quantization for ONNX models.

The public API, and all a plugin may import (tests/core/test_core_public_api.py
checks every plugin and contrib source file): this package, :mod:`qtool.ops`
(the op-role table) and :mod:`qtool.quant` (schemes, configs and the
quantization plan). What each name is for: docs/design.md.

The names are imported on first use, so that ``qtool --version`` and
``qtool --help`` start without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

__version__ = "0.1.0"

_EXPORTS = {
    ".analysis": ["nonfinite_split", "output_array"],
    ".errors": ["QtoolError", "UnknownNameError"],
    ".files": ["make_readable", "write_atomic"],
    ".ir": ["Graph", "GraphError", "Operation", "PROTO_LIMIT", "Variable", "data_path", "fill_values", "load",
            "outer_references", "rename_outer_reads", "save", "save_files", "save_model_files", "save_model_proto",
            "shape_only_tensor", "to_model_proto"],
    ".ops": ["OpRoles", "op_roles"],
    ".pipeline": ["QuantizeResult", "quantize"],
    ".platform": ["Capabilities", "Diagnostic", "ExportOptionError", "ExportOptions", "KeepFloat", "Platform", "Proposal",
                  "RuntimeUnavailable", "Severity", "get_platform"],
    ".plugins": ["PluginError", "hookimpl"],
    ".report": ["AnalysisReport", "Explanation", "analyse", "explain"],
    ".quant": ["OpQuantConfig", "QuantizationPolicy", "QuantizationState", "QuantizedTensor", "QuantScheme",
               "RoundingPolicy", "Site", "TensorQuantizationConfig", "quantized_tensors", "representable_range",
               "round_array", "sites"],
}
_names, __getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
__all__ = ["__version__", *_names]


if TYPE_CHECKING:
    from .analysis import nonfinite_split, output_array
    from .errors import QtoolError, UnknownNameError
    from .files import make_readable, write_atomic
    from .ir import (
        PROTO_LIMIT,
        Graph,
        GraphError,
        Operation,
        Variable,
        data_path,
        fill_values,
        load,
        outer_references,
        rename_outer_reads,
        save,
        save_files,
        save_model_files,
        save_model_proto,
        shape_only_tensor,
        to_model_proto,
    )
    from .ops import OpRoles, op_roles
    from .pipeline import QuantizeResult, quantize
    from .platform import (
        Capabilities,
        Diagnostic,
        ExportOptionError,
        ExportOptions,
        KeepFloat,
        Platform,
        Proposal,
        RuntimeUnavailable,
        Severity,
        get_platform,
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
    from .report import AnalysisReport, Explanation, analyse, explain
