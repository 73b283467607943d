"""The torch executor: runs a Graph op by op, simulating quantization where configured.

Importing it loads the op library; ops without a kernel there run in float through
ONNX Runtime. Plugins register their ops on first use (never at import, so that a
failing plugin is reported where errors are handled).
"""

from .errors import ExecutorError, InputError, OpExecutionError, UnsupportedOpsError
from .executor import TorchExecutor
from .hooks import HookHandle
from .ort_fallback import FALLBACK_REASON
from .plugin_ops import load_plugin_ops
from .simulation import Site
from .support import CONTROL_FLOW_REASON, check_supported, float_reason, has_kernel, op_type_counts, ort_fallback_ops, unsupported_ops

__all__ = [
    "CONTROL_FLOW_REASON", "FALLBACK_REASON", "ExecutorError", "HookHandle", "InputError", "OpExecutionError", "Site", "TorchExecutor",
    "UnsupportedOpsError", "check_supported", "float_reason", "has_kernel", "load_plugin_ops", "op_type_counts",
    "ort_fallback_ops", "unsupported_ops",
]
