"""The contract a target platform fulfils: defaults, capabilities, validation, export."""

from __future__ import annotations

import enum
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .config.errors import did_you_mean
from .errors import QtoolError
from .plugins.manager import PluginError
from .plugins.registry import Registry


class Severity(enum.Enum):
    """How bad a diagnostic is.

    ERROR: the target cannot run this. PERFORMANCE: it runs, correctly, but
    through float kernels (slower than an integer kernel, maybe than float).
    WARNING: anything else worth a user's attention.
    """

    ERROR = "error"
    WARNING = "warning"
    PERFORMANCE = "performance"


@dataclass(frozen=True)
class Diagnostic:
    """One finding of a platform's rules, naming where it applies."""

    severity: Severity
    code: str
    message: str
    op: str | None = None
    tensor: str | None = None
    scheme: str | None = None

    def __str__(self) -> str:
        where = ", ".join(p for p in (f"op {self.op!r}" if self.op else "",
                                       f"tensor {self.tensor!r}" if self.tensor else "",
                                       self.scheme or "") if p)
        return f"{self.severity.value} [{self.code}] {where + ': ' if where else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "code": self.code, "message": self.message,
                "op": self.op, "tensor": self.tensor, "scheme": self.scheme}


@dataclass(frozen=True)
class Capabilities:
    """What a platform can carry, for listings and quick checks."""

    bits: tuple[int, ...] = (8,)
    policies: tuple[str, ...] = ("SYMMETRICAL", "PER_TENSOR", "LINEAR")
    opsets: tuple[int, int] | None = None  # lowest and highest ONNX opset written
    formats: tuple[str, ...] = ("int8",)

    def as_dict(self) -> dict[str, Any]:
        return {"bits": list(self.bits), "policies": list(self.policies),
                "opsets": list(self.opsets) if self.opsets else None, "formats": list(self.formats)}


class ExportOptionError(QtoolError, ValueError):
    """An export option that the platform does not read; names the option and the platform."""


@dataclass
class ExportOptions:
    """What the user asked of the export; platforms read what applies to them."""

    opset: int | None = None
    remove_activations: bool | None = None  # None: the configuration's fusion.remove_activations (false alone)
    allow_unsupported: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Platform:
    """Base class of every target platform. Subclasses set the class attributes.

    * :meth:`default_config` returns configuration defaults in the config-file
      structure (see :mod:`qtool.config`).
    * :meth:`validate` inspects a dispatched or calibrated graph and returns
      diagnostics; it must not modify the graph.
    * :meth:`export` writes the target's files for a calibrated graph and
      returns their paths. It must write atomically (temporary file, rename).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    output_format: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: the ``ExportOptions.extra`` keys that :meth:`export` reads, each with what it means
    export_options: ClassVar[Mapping[str, str]] = {}

    def default_config(self) -> dict[str, Any]:
        return {}

    def validate(self, graph, options: ExportOptions | None = None) -> list[Diagnostic]:
        return []

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        raise NotImplementedError(f"platform {self.name!r} does not export")

    def agreement(self, graph, paths: list[Path], samples: list[dict], simulated: list[list]) -> dict | None:
        """Run the exported files on the target (when it can run here) and compare with qtool's simulation.

        ``samples`` are input dicts, ``simulated`` the executor's outputs for them.
        Returns a JSON-able report, or None when the target cannot run here.
        """
        return None

    @classmethod
    def check_export_options(cls, extra: Mapping[str, Any]) -> None:
        """Raise :class:`ExportOptionError` for a key of ``extra`` that this platform does not read."""
        for key in extra:
            if key not in cls.export_options:
                known = ", ".join(cls.export_options) or "none"
                raise ExportOptionError(f"export option {key!r}: platform {cls.name!r} does not read it"
                                        f"{did_you_mean(key, cls.export_options)} (its options: {known})")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description, "output_format": cls.output_format,
                **cls.capabilities.as_dict(), "export_options": dict(cls.export_options)}


def _platform_name(cls) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Platform)):
        raise PluginError(f"registered platform {cls!r} is not a subclass of qtool.Platform")
    if not cls.name:
        raise PluginError(f"platform class {cls.__qualname__} has no name")
    return cls.name


PLATFORMS: Registry[type[Platform]] = Registry("platform", "qtool_register_platforms", name_of=_platform_name)


def get_platform(name: str) -> Platform:
    """An instance of the installed platform ``name`` (KeyError lists the known ones)."""
    return PLATFORMS.get(name)()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
