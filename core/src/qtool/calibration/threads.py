"""How many threads qtool's own runs use, and torch's thread count for a block, without importing torch.

Small tensor work (the agreement check's single samples, the export's weight codes) always runs on one torch
thread: it is many small, memory-bound ops, a second intra-op thread gains little there, and on a machine whose
cores are busy the thread pool's synchronisation made it 5-20x slower (measured on the shared 2-core development
machine: 4 single PP-OCRv4 crops 1.8 s on one thread, 42 s on two; all-MiniLM-L6-v2's int8 weight codes 0.04 s on
one, 0.48 s on two). The calibration observers compute in numpy, on one thread.

Whole passes (and onnxruntime's float runs) use :func:`pass_threads` threads: ``QTOOL_NUM_THREADS`` when set, else
one thread when the machine's one-minute load already fills every core this process may use (other work owns them;
more threads only wait on each other: a small CNN calibrated in 2.8 s on one thread and 15 s on two at load 26),
else torch's default: its current count where torch is loaded, else the count it would start with, read without
importing it (the physical cores, here counted among the CPUs this process may use, or fewer where
``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS`` asks for fewer).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "QTOOL_NUM_THREADS"
_CPUS = Path("/sys/devices/system/cpu")


def pass_threads() -> int:
    """The thread count for qtool's passes (see the module docstring)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            from ..errors import QtoolError

            raise QtoolError(f"environment variable {ENV}: must be a whole number >= 1, got {value!r}")
        return int(value)
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= len(_usable_cpus()):
        return 1
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else _torch_default_threads()


def _usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _torch_default_threads() -> int:
    """The thread count torch starts with: the physical cores (of the CPUs this process may use; their logical count
    where the topology cannot be read), fewer where ``MKL_NUM_THREADS`` or else ``OMP_NUM_THREADS`` asks for fewer
    (torch takes MKL's count, which never exceeds the physical cores)."""
    cores = _physical_cores(tuple(_usable_cpus()))
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), cores)
    return cores


@functools.cache
def _physical_cores(cpus: tuple[int, ...]) -> int:
    """The physical cores among ``cpus`` (read once per set: a run asks several times), or their count where the
    topology cannot be read."""
    try:
        return len({tuple((_CPUS / f"cpu{cpu}" / "topology" / name).read_text()
                          for name in ("physical_package_id", "core_id")) for cpu in cpus})
    except OSError:
        return len(cpus)


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, then restore the previous count. Nothing here imports
    torch: where it is not loaded yet, a torch that the block imports starts with ``count`` threads, and gets back
    the count it would have started with (or an enclosing block's) when the block ends."""
    torch = sys.modules.get("torch")
    if torch is None:
        with _when_torch_loads(count):
            yield
        return
    saved = torch.get_num_threads()
    if saved == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


_pending: list[int] = []  # counts of the threads() blocks entered before torch was loaded, innermost last


@contextmanager
def _when_torch_loads(count: int) -> Iterator[None]:
    if not _pending:
        sys.meta_path.insert(0, _FINDER)
    _pending.append(count)
    try:
        yield
    finally:
        _pending.pop()
        if not _pending:
            sys.meta_path.remove(_FINDER)
        torch = sys.modules.get("torch")
        if torch is not None:  # the block imported it
            torch.set_num_threads(_pending[-1] if _pending else _torch_default_threads())


class _TorchFinder:
    """A meta path finder that finds torch through the others and sets its thread count once it has loaded
    (present only inside :func:`threads` blocks entered before torch was loaded)."""

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _ThenSetThreads(spec.loader)
                return spec
        return None


class _ThenSetThreads:
    """A loader that runs ``loader`` (all else delegated to it), then sets the innermost pending thread count."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        if _pending:
            module.set_num_threads(_pending[-1])


_FINDER = _TorchFinder()


def one_thread():
    """:func:`threads` with one thread: for small tensor work."""
    return threads(1)
