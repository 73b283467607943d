"""The torch executor: runs a Graph op by op, simulating quantization where configured.

Importing it loads the op library; plugins register their ops on first use
(never at import, so that a failing plugin is reported where errors are handled).
"""

from .errors import ExecutorError, InputError, OpExecutionError, UnsupportedOpsError
from .executor import TorchExecutor
from .hooks import HookHandle
from .plugin_ops import load_plugin_ops
from .simulation import Site
from .support import check_supported, op_type_counts, unsupported_ops

__all__ = [
    "ExecutorError", "HookHandle", "InputError", "OpExecutionError", "Site", "TorchExecutor", "UnsupportedOpsError",
    "check_supported", "load_plugin_ops", "op_type_counts", "unsupported_ops",
]
