"""The torch executor: runs a Graph op by op, simulating quantization where configured.

Importing :class:`TorchExecutor` loads the op library (torch); ops without a kernel there run in float through
ONNX Runtime. The names are imported on first use, so that asking which ops are supported (:mod:`.support`) or
reading the errors imports no torch. Plugins register their ops on first use (never at import, so that a failing
plugin is reported where errors are handled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

_EXPORTS = {
    ".errors": ["ExecutorError", "InputError", "OpExecutionError", "UnsupportedOpsError"],
    ".executor": ["TorchExecutor"],
    ".hooks": ["HookHandle"],
    ".ort_fallback": ["FALLBACK_REASON"],
    ".plugin_ops": ["load_plugin_ops"],
    ".simulation": ["Site"],
    ".support": ["CONTROL_FLOW_REASON", "check_supported", "float_reason", "has_kernel", "op_type_counts",
                 "ort_fallback_ops", "unsupported_ops"],
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .errors import ExecutorError, InputError, OpExecutionError, UnsupportedOpsError
    from .executor import TorchExecutor
    from .hooks import HookHandle
    from .ort_fallback import FALLBACK_REASON
    from .plugin_ops import load_plugin_ops
    from .simulation import Site
    from .support import (
        CONTROL_FLOW_REASON,
        check_supported,
        float_reason,
        has_kernel,
        op_type_counts,
        ort_fallback_ops,
        unsupported_ops,
    )
