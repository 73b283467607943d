"""Errors the executor reports: each names the input, node or op type at fault."""

from __future__ import annotations

from ..errors import QtoolError


class ExecutorError(QtoolError, RuntimeError):
    """The executor cannot run this graph, these inputs or on this device."""


class UnsupportedOpsError(ExecutorError):
    """The graph holds ops neither the op library nor ONNX Runtime implements; ``missing`` maps (domain, op_type) to node names."""

    def __init__(self, missing: dict[tuple[str, str], list[str]]) -> None:
        self.missing = missing
        super().__init__(f"unsupported op(s), no executor kernel and unknown to ONNX Runtime: {describe_missing(missing)}")


class InputError(ExecutorError, ValueError):
    """A model input is missing, unknown, or of the wrong rank, shape or dtype."""


class OpExecutionError(ExecutorError):
    """An op raised while running; the message names the node and op type."""


def describe_missing(missing: dict[tuple[str, str], list[str]]) -> str:
    """'Foo (nodes a, b), com.x::Bar (node c)' with at most three node names per op type."""
    parts = []
    for (domain, op_type), nodes in sorted(missing.items()):
        label = f"{domain}::{op_type}" if domain not in ("", "ai.onnx") else op_type
        shown = ", ".join(nodes[:3]) + (f", ... ({len(nodes)} in all)" if len(nodes) > 3 else "")
        parts.append(f"{label} ({'nodes' if len(nodes) > 1 else 'node'} {shown})")
    return "; ".join(parts)
