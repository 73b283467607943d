"""RestoreState: the calibration step taken from a saved state file instead of data."""

from __future__ import annotations

import os

from ..ir import Graph
from ..state import load_state
from .base import Pass, PassResult


class RestoreState(Pass):
    """Put the configs saved by :func:`qtool.state.save_state` back on the dispatched graph.

    The file must match what the planning passes decided (same ops, same schemes),
    so a changed configuration or model is reported instead of silently mixed in.
    """

    name = "RestoreState"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def call(self, graph: Graph) -> PassResult:
        saved = load_state(graph, self.path)
        return PassResult(graph, True, {"path": str(self.path), "created": saved.get("created"),
                                        "data_fingerprint": saved.get("data_fingerprint")})
