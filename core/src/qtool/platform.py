"""The contract a target platform fulfils: defaults, capabilities, validation, export."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .config.errors import did_you_mean
from .errors import QtoolError
from .plugins.manager import PluginError
from .plugins.registry import Registry
from .quant import OpQuantConfig, QuantizationPolicy


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

    @property
    def place(self) -> str:
        """Where it was found: ``op 'conv1', tensor 'x'`` ("" for the model as a whole)."""
        return ", ".join(p for p in (f"op {self.op!r}" if self.op else "",
                                     f"tensor {self.tensor!r}" if self.tensor else "") if p)

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.place, self.scheme or "") if p)
        return f"{self.severity.value} [{self.code}] {where + ': ' if where else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "code": self.code, "message": self.message,
                "op": self.op, "tensor": self.tensor, "scheme": self.scheme}


@dataclass(frozen=True)
class Capabilities:
    """What a platform can carry, for listings and quick checks.

    ``policies`` is the union of the :class:`QuantizationPolicy` flags the
    platform writes; flag names are accepted too (``("SYMMETRICAL", ...)``),
    and an unknown name fails where the platform declares it.
    """

    bits: tuple[int, ...] = (8,)
    policies: QuantizationPolicy = QuantizationPolicy.SYMMETRICAL | QuantizationPolicy.PER_TENSOR | \
        QuantizationPolicy.LINEAR
    opsets: tuple[int, int] | None = None  # lowest and highest ONNX opset written
    formats: tuple[str, ...] = ("int8",)

    def __post_init__(self) -> None:
        if not isinstance(self.policies, QuantizationPolicy):
            object.__setattr__(self, "policies", _policy_flags(self.policies))
        object.__setattr__(self, "bits", tuple(self.bits))
        object.__setattr__(self, "formats", tuple(self.formats))

    def supports(self, scheme) -> bool:
        """True when ``scheme``'s width and every flag of its policy are declared."""
        return scheme.num_of_bits in self.bits and not scheme.policy & ~self.policies

    def policy_names(self) -> list[str]:
        return [flag.name for flag in QuantizationPolicy if flag in self.policies]

    def as_dict(self) -> dict[str, Any]:
        return {"bits": list(self.bits), "policies": self.policy_names(),
                "opsets": list(self.opsets) if self.opsets else None, "formats": list(self.formats)}


def _policy_flags(names: Iterable[str]) -> QuantizationPolicy:
    flags = QuantizationPolicy(0)
    for name in names:
        if name not in QuantizationPolicy.__members__:
            raise PluginError(f"Capabilities policy {name!r} is not a QuantizationPolicy flag"
                              f"{did_you_mean(name, QuantizationPolicy.__members__)} "
                              f"(known: {', '.join(QuantizationPolicy.__members__)})")
        flags |= QuantizationPolicy[name]
    return flags


@dataclass(frozen=True)
class Proposal:
    """What Dispatch proposes for an op the configuration quantizes; :meth:`Platform.annotate` answers it.

    ``configs``: the op's configs (INITIAL); ``reason``: why it is proposed;
    ``requested``: the user's own configuration asks for this op (its type in
    ``dispatch.quantize_op_types`` or its name in ``dispatch.include``), not
    only the platform's defaults or a preset; ``user_granularity``: the inputs
    whose granularity the user's own configuration sets (a platform leaves
    those as they are).
    """

    configs: OpQuantConfig
    reason: str
    requested: bool = False
    user_granularity: frozenset[int] = frozenset()


@dataclass(frozen=True)
class KeepFloat:
    """A platform's answer to a :class:`Proposal`: the op stays float, for this reason (shown by ``explain``)."""

    reason: str


class RuntimeUnavailable(QtoolError):
    """The platform's runtime cannot run its files on this machine (:meth:`Platform.run`)."""


class ExportOptionError(QtoolError, ValueError):
    """An export option that the platform does not read; names the option and the platform."""


@dataclass
class ExportOptions:
    """What the user asked of the export; platforms read what applies to them."""

    opset: int | None = None
    remove_activations: bool | None = None  # None: the configuration's fusion.remove_activations (false alone)
    allow_unsupported: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: what validate() found for this graph and these options, when the caller already ran it (the pipeline
    #: does): export reads them instead of validating again
    diagnostics: tuple[Diagnostic, ...] | None = None


class Platform:
    """Base class of every target platform. Subclasses set the class attributes.

    * :meth:`default_config` returns configuration defaults in the config-file
      structure (see :mod:`qtool.config`).
    * :meth:`annotate` answers Dispatch for each op the configuration would
      quantize: the proposal (possibly with changed configs) or
      :class:`KeepFloat` with a reason. What it keeps float is never flagged.
    * :meth:`validate` inspects a dispatched or calibrated graph and returns
      diagnostics for what annotation could not prevent; it must not modify the graph.
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

    def annotate(self, op, proposal: Proposal) -> Proposal | KeepFloat:
        """What this platform quantizes of ``op``: ``proposal`` as is (the default), changed, or KeepFloat."""
        return proposal

    def validate(self, graph, options: ExportOptions | None = None) -> list[Diagnostic]:
        return []

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        raise NotImplementedError(f"platform {self.name!r} does not export")

    def output_files(self, output: Path, options: ExportOptions) -> list[Path]:
        """Every file :meth:`export` may write for ``output``, side files and external data included: a run checks
        them before any work against its inputs and its other files. The default: ``output`` alone."""
        return [Path(output)]

    def run(self, paths: list[Path], samples: list[dict], names: list[str]) -> list[list]:
        """The outputs ``names`` of the exported files run on the target, one list per sample (numpy arrays).

        Raises :class:`RuntimeUnavailable` where the target cannot run here (the default), and the target's
        own error where it refuses the files.
        """
        raise RuntimeUnavailable(f"platform {self.name!r} cannot run its files here")

    def runner(self, paths: list[Path]) -> Callable[[list[dict], list[str]], list[list]]:
        """``run(samples, names)`` as :meth:`run` gives them, for many runs of the same files (a metric's batches,
        one at a time). The default calls :meth:`run` each time; a target that loads the files once (a session)
        overrides it to load them here."""
        return lambda samples, names: self.run(paths, samples, names)

    def runtime(self) -> str:
        """What :meth:`run` runs the files on, for reports (e.g. ``onnxruntime 1.20.0 (CPUExecutionProvider)``)."""
        return f"platform {self.name!r}'s runtime"

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


@contextmanager
def platform_step(target: Platform, step: str):
    """A platform's own failure in ``step`` (not a QtoolError) as one PluginError naming the platform and module."""
    try:
        yield
    except QtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the plugin raised is the plugin's, reported by name
        message = " ".join(str(exc).split()) or "no message"
        raise PluginError(f"platform {target.name!r} ({type(target).__module__}) failed in {step}: "
                          f"{type(exc).__name__}: {message}") from exc


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity is Severity.ERROR]
