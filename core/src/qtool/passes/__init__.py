"""Graph passes. Each pass lives in its own module with a test beside it."""

from .base import Pass, PassError, PassManager, PassResult, PassRun, PassWarning, StartOver

__all__ = ["Pass", "PassError", "PassManager", "PassResult", "PassRun", "PassWarning", "StartOver"]
