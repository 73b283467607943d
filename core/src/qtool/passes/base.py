"""Pass infrastructure: a pass transforms a graph and says whether it changed it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config.errors import ConfigError
from ..errors import FeedError, QtoolError
from ..ir import Graph
from ..platform_calls import UnsupportedModelError
from ..plugins.manager import PluginError
from ..state import StateError


class PassError(QtoolError, RuntimeError):
    """A pass failed, or its pre/postcondition does not hold."""


class PassWarning(UserWarning):
    """Something a pass found that the user should see; names the op (and tensor), with a short code.

    The one way a pass reports a finding: :func:`qtool.quantize` turns each into a WARNING diagnostic.
    """

    def __init__(self, message: str, *, code: str, op: str | None = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.code, self.op, self.tensor = code, op, tensor


class StartOver(Exception):  # noqa: N818 - not an error: the run is asked to start over
    """Raised while the passes run by a pass that let a later run decide for it (ChannelSplit deciding from
    calibration's float run) and learned there that it must change the graph: the passes start over from the graph
    as it was before them, with ``advice`` (what the pass learned, by pass name) for the pass that acts."""

    def __init__(self, advice: dict[str, Any]) -> None:
        super().__init__(f"starting over: {', '.join(advice)} acts")
        self.advice = advice


@dataclass
class PassResult:
    """What a pass did. ``details`` is its JSON-able record; ``report`` a typed one (a dataclass with fields)
    for passes whose results other code reads, e.g. :class:`~qtool.passes.accuracy.fallback.FallbackReport`."""

    graph: Graph
    modified: bool
    details: dict[str, Any] = field(default_factory=dict)
    report: Any = None


class Pass:
    """One graph transformation. Subclasses implement :meth:`call`.

    :meth:`requires` and :meth:`ensures` check pre- and postconditions and raise
    :class:`PassError` when they do not hold. ``changes_float_function`` declares that the pass changes the graph's
    float function on purpose (bias correction): the pass manager keeps a copy of the graph from before it
    (``Graph.float_reference``), which the quantized model is then measured against.
    """

    name: ClassVar[str] = ""
    changes_float_function: ClassVar[bool] = False

    def requires(self, graph: Graph) -> None:
        """Precondition; raise PassError when it does not hold."""

    def ensures(self, graph: Graph) -> None:
        """Postcondition; raise PassError when it does not hold."""

    def call(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph) -> PassResult:
        self.requires(graph)
        result = self.call(graph)
        self.ensures(result.graph)
        return result

    @property
    def label(self) -> str:
        return self.name or type(self).__name__


@dataclass
class PassRun:
    """What one pass did inside a PassManager run."""

    name: str
    modified: bool
    seconds: float
    details: dict[str, Any]
    report: Any = None


class PassManager:
    """Runs passes in order, records timings, names the failing pass and what ran before.

    ``progress(label)`` is called before each pass, ``finished(run)`` after it; ``ran`` names the passes that ran
    on the graph before these (for the error that names what ran before a failing pass).
    """

    def __init__(self, passes: Sequence[Pass], progress: Callable[[str], None] | None = None,
                 finished: Callable[[PassRun], None] | None = None, ran: Sequence[str] = ()) -> None:
        self.passes = list(passes)
        self.progress = progress
        self.finished = finished
        self.ran = list(ran)

    def run(self, graph: Graph) -> list[PassRun]:
        runs: list[PassRun] = []
        for p in self.passes:
            if self.progress:
                self.progress(p.label)
            start = time.perf_counter()
            if p.changes_float_function and graph.float_reference is None:
                graph.float_reference = graph.copy()  # what the quantized model is measured against from now on
            try:
                result = p(graph)
            except (StartOver, ConfigError, StateError, PluginError, UnsupportedModelError, FeedError):  # names the
                raise  # file (a config's, a feed's), plugin or platform finding at fault
            except Exception as exc:
                before = ", ".join([*self.ran, *(r.name for r in runs)]) or "nothing"
                raise PassError(f"pass {p.label} failed (after: {before}): {exc}") from exc
            graph = result.graph
            runs.append(PassRun(p.label, result.modified, time.perf_counter() - start, result.details, result.report))
            if self.finished:
                self.finished(runs[-1])
        return runs
