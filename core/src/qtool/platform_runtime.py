"""A platform's runtime for the passes: a graph exported as the platform exports it, run where the platform runs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .calibration.data import feeds_digest
from .calibration.kept_outputs import LIMIT
from .calibration.threads import one_thread
from .platform import ExportOptions, Platform, RuntimeUnavailable


class PlatformRuntime:
    """``runtime(graph, samples, names)``: the outputs ``names`` of ``graph`` as ``platform`` runs it, one list of
    numpy arrays per sample: the graph exported with ``options`` into a temporary folder (not validated: nothing of
    it is kept; the export reads the graph, as the pipeline's own export does before its checks) and run by
    :meth:`Platform.run`. Raises :class:`RuntimeUnavailable` where the platform
    cannot export this graph or run its files here (without exporting where it keeps :meth:`Platform.run`'s
    default, which runs nothing).

    The outputs of its last run are kept (up to ``LIMIT`` bytes) with a digest of the files it ran and of each
    sample: :meth:`run_files` serves them for the same files' bytes and samples (the pipeline's written model is
    often byte for byte the one the fallback's gate ran)."""

    def __init__(self, platform: Platform, options: ExportOptions) -> None:
        self.platform = platform
        self.options = dataclasses.replace(options, diagnostics=(), extra=dict(options.extra))
        self.name = platform.name
        self._last: tuple[str, list[str], list[str], list[list]] | None = None  # files, samples, names, outputs

    def __call__(self, graph, samples: list[dict], names: list[str]) -> list[list]:
        with self.exported(graph) as run:
            outputs = run(samples, names)
            self._keep(run.paths, samples, names, outputs)
            return outputs

    @contextlib.contextmanager
    def exported(self, graph) -> Iterator[_Run]:
        """``run(samples, names)`` of ``graph`` exported once (many runs of one graph: a metric's batches)."""
        if type(self.platform).run is Platform.run:  # it keeps the default (runs nothing): no export for nothing
            yield _Run(self, [])
            return
        with tempfile.TemporaryDirectory(prefix="qtool-runtime-") as folder:
            try:
                with one_thread():  # as the pipeline exports: a few small ops per weight
                    paths = self.platform.export(graph, Path(folder) / "model", self.options)
            except Exception as exc:  # noqa: BLE001 - whatever stops the export: no runtime for this graph
                raise self._unavailable(exc) from exc
            yield _Run(self, paths)

    def _unavailable(self, exc: Exception) -> RuntimeUnavailable:
        if isinstance(exc, RuntimeUnavailable):
            return exc
        message = " ".join(str(exc).split()) or "no message"
        return RuntimeUnavailable(f"platform {self.name!r} cannot run this graph here ({type(exc).__name__}: "
                                  f"{message})")

    def run_files(self, paths: Sequence[Path], samples: list[dict], names: list[str]) -> list[list]:
        """:meth:`Platform.run` of written files; the outputs of the last run where it ran the same bytes on the
        same samples (or more)."""
        if self._last is not None:
            files, ran, asked, outputs = self._last
            if (asked == list(names) and len(samples) <= len(ran) and _files_digest(paths) == files
                    and [feeds_digest(sample) for sample in samples] == ran[:len(samples)]):
                return outputs[:len(samples)]
        return self.platform.run(paths, samples, names)

    def _keep(self, paths, samples: list[dict], names: list[str], outputs: list[list]) -> None:
        size = sum(getattr(value, "nbytes", 0) for row in outputs for value in row)
        self._last = None if size > LIMIT else (
            _files_digest(paths), [feeds_digest(sample) for sample in samples], list(names), outputs)


class _Run:
    """The outputs ``names`` of the exported ``paths`` for ``samples``, as :meth:`Platform.run` gives them; whatever
    stops the run a :class:`RuntimeUnavailable`."""

    def __init__(self, runtime: PlatformRuntime, paths: list[Path]) -> None:
        self.runtime, self.paths = runtime, paths
        self._runner = None  # :meth:`Platform.runner` of the paths, from the first run on

    def __call__(self, samples: list[dict], names: list[str]) -> list[list]:
        try:
            if self._runner is None:
                self._runner = self.runtime.platform.runner(self.paths)
            return self._runner(samples, names)
        except Exception as exc:  # noqa: BLE001 - whatever stops the run: no runtime for this graph
            raise self.runtime._unavailable(exc) from exc


def _files_digest(paths: Sequence[Path]) -> str:
    """sha256 over the bytes of every file, in order."""
    hasher = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                hasher.update(chunk)
    return hasher.hexdigest()
