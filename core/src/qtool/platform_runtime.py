"""A platform's runtime for the passes: a graph exported as the platform exports it, run where the platform runs."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from .calibration.threads import one_thread
from .platform import ExportOptions, Platform, RuntimeUnavailable


class PlatformRuntime:
    """``runtime(graph, samples, names)``: the outputs ``names`` of ``graph`` as ``platform`` runs it, one list of
    numpy arrays per sample: the graph exported with ``options`` into a temporary folder (not validated: nothing of
    it is kept; the export reads the graph, as the pipeline's own export does before its checks) and run by
    :meth:`Platform.run`. Raises :class:`RuntimeUnavailable` where the platform
    cannot export this graph or run its files here (without exporting where it keeps :meth:`Platform.run`'s
    default, which runs nothing)."""

    def __init__(self, platform: Platform, options: ExportOptions) -> None:
        self.platform = platform
        self.options = dataclasses.replace(options, diagnostics=(), extra=dict(options.extra))
        self.name = platform.name

    def __call__(self, graph, samples: list[dict], names: list[str]) -> list[list]:
        if type(self.platform).run is Platform.run:  # it keeps the default (runs nothing): no export for nothing
            return Platform.run(self.platform, [], samples, names)
        with tempfile.TemporaryDirectory(prefix="qtool-runtime-") as folder:
            try:
                with one_thread():  # as the pipeline exports: a few small ops per weight
                    paths = self.platform.export(graph, Path(folder) / "model", self.options)
                return self.platform.run(paths, samples, names)
            except RuntimeUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever stops the export or the run: no runtime for this graph
                message = " ".join(str(exc).split()) or "no message"
                raise RuntimeUnavailable(f"platform {self.name!r} cannot run this graph here "
                                         f"({type(exc).__name__}: {message})") from exc
