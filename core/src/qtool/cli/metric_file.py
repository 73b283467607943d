"""``--metric FILE.py:FUNCTION``: a user's accuracy metric, loaded from a Python file, for the fallback budget."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import QtoolError
from ..files import file_kind


class MetricFileError(QtoolError):
    """The metric named on the command line cannot be loaded; names the file and the function."""


def load_metric(spec: str) -> Callable:
    """The function ``FUNCTION`` of the Python file ``FILE`` (``spec`` is ``FILE:FUNCTION``).

    It is called as ``metric(executor) -> float`` (higher is better) with a
    :class:`qtool.executor.TorchExecutor` whose ``forward`` runs the model.
    """
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise MetricFileError(f"--metric {spec!r}: expected FILE.py:FUNCTION")
    file = Path(path)
    if not file.is_file():
        kind = file_kind(file)
        raise MetricFileError(f"--metric {spec!r}: " + (f"{str(file)!r} is {kind}, not a Python file" if kind
                                                         else f"no such file {str(file)!r}"))
    module_spec = importlib.util.spec_from_file_location(f"qtool_user_metric_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise MetricFileError(f"--metric {spec!r}: {str(file)!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # as importlib's recipe does: dataclasses and pickle look it up there
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's file is reported with its name
        del sys.modules[module_spec.name]
        raise MetricFileError(f"--metric {spec!r}: importing {str(file)!r} failed: {type(exc).__name__}: {exc}") \
            from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise MetricFileError(f"--metric {spec!r}: {str(file)!r} has no function {name!r}")
    return function
