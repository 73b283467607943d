"""A platform's answers checked where the core asks for them: a wrong one is one PluginError naming the platform."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import QtoolError
from .files import restored_on_failure
from .platform import Diagnostic, KeepFloat, Platform, Proposal, Severity, platform_step
from .plugins.manager import PluginError


class UnsupportedModelError(QtoolError):
    """The platform cannot run the quantized model (ERROR diagnostics) and that was not allowed.

    ``diagnostics`` holds every diagnostic of the run, errors and others.
    """

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or []


def refuse_unsupported(target: Platform, diagnostics: list[Diagnostic], *, before_calibration: bool = False,
                       config=None, graph=None) -> None:
    """UnsupportedModelError where ``diagnostics`` hold an ERROR: ``before_calibration``, validate's findings on
    the plan (schemes, opsets: what calibration cannot change), else the run's. With the ``config`` and ``graph``,
    the message leads with the configuration keys that asked for the schemes of the tensors at fault."""
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    if not errors:
        return
    groups = grouped(errors)
    more = f"; and {len(groups) - SHOWN} more (quantize --json lists every diagnostic)" if len(groups) > SHOWN else ""
    listed = "; ".join(groups[:SHOWN]) + more
    when = ", found before calibration" if before_calibration else ""
    keys = scheme_keys(config, graph, errors) if config is not None and graph is not None else []
    asked = f"{', '.join(keys)}: " if keys else ""
    raise UnsupportedModelError(f"{asked}{target.name} cannot run the quantized model ({len(errors)} error(s){when}): "
                                f"{listed}. Nothing was written (--allow-unsupported exports anyway)", diagnostics)


SHOWN = 5  # reasons a refusal lists
SHOWN_PLACES = 3  # places named for one reason


def grouped(errors: list[Diagnostic]) -> list[str]:
    """Each distinct finding once (code, scheme and message), with the places it was found: the first few, then how
    many more (a 4-bit activation scheme on a CNN repeated one reason for every tensor of the line)."""
    places: dict[tuple, list[Diagnostic]] = {}
    for d in errors:
        places.setdefault((d.code, d.scheme, d.message), []).append(d)
    lines = []
    for (code, scheme, message), found in places.items():
        if len(found) == 1:
            lines.append(str(found[0]))
            continue
        named = "; ".join(d.place or "the model" for d in found[:SHOWN_PLACES])
        more = f"; and {len(found) - SHOWN_PLACES} more" if len(found) > SHOWN_PLACES else ""
        lines.append(f"{found[0].severity.value} [{code}] {scheme + ' ' if scheme else ''}at {len(found)} places "
                     f"({named}{more}): {message}")
    return lines


def scheme_keys(config, graph, found: list[Diagnostic]) -> list[str]:
    """The configuration keys (:meth:`qtool.config.QuantConfig.scheme_keys`) of the tensors ``found`` names, once
    each, in the order found."""
    keys: dict[str, None] = {}
    for d in found:
        op, var = graph.operations.get(d.op or ""), graph.variables.get(d.tensor or "")
        if op is not None and var is not None:
            role = "weight" if var.is_parameter else "activation"
            keys.update(dict.fromkeys(config.scheme_keys(op, role, var.name)))
    return list(keys)


def fault(target: Platform, text: str) -> PluginError:
    """The error for a platform's wrong answer, in :func:`qtool.platform.platform_step`'s form."""
    return PluginError(f"platform {target.name!r} ({type(target).__module__}): {text}")


def validated(target: Platform, graph, options) -> list[Diagnostic]:
    """``target.validate(graph, options)`` read once into a list, each item a Diagnostic with a Severity."""
    with platform_step(target, "validate"):
        found = target.validate(graph, options)
        if isinstance(found, str | bytes | Mapping) or not isinstance(found, Iterable):
            raise fault(target, f"validate() returned {_what(found)}; it must return a list of qtool.Diagnostic")
        found = list(found)  # a generator's own failure is the platform's too
    for d in found:
        if not isinstance(d, Diagnostic):
            raise fault(target, f"validate() returned {_what(d)} among its diagnostics; each must be a "
                                "qtool.Diagnostic")
        if not isinstance(d.severity, Severity):
            raise fault(target, f"validate() returned diagnostic {d.code!r} with severity {_what(d.severity)}; "
                                "it must be a qtool.Severity (e.g. Severity.ERROR)")
    return found


def annotated(target: Platform, op, proposal: Proposal) -> Proposal | KeepFloat:
    """``target.annotate(op, proposal)``: a Proposal or KeepFloat."""
    with platform_step(target, f"annotate (op {op.name!r})"):
        answer = target.annotate(op, proposal)
    if not isinstance(answer, Proposal | KeepFloat):
        raise fault(target, f"annotate() returned {_what(answer)} for op {op.name!r}; it must return the "
                            "qtool.Proposal it was given (changed or not) or qtool.KeepFloat(reason)")
    return answer


def exported(target: Platform, graph, output: Path, options) -> list[Path]:
    """``target.export(graph, output, options)``: the paths it wrote, each one of its ``output_files()``. Where it
    fails or answers otherwise, those files are as before (:func:`qtool.files.restored_on_failure`), and a new file
    in the output's folder that they do not name is removed."""
    declared = {Path(p).absolute() for p in target.output_files(output, options)}
    folder = Path(output).absolute().parent
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    with restored_on_failure(declared):
        with platform_step(target, f"export to {output}"):
            paths = target.export(graph, output, options)
        if not isinstance(paths, list | tuple):
            raise fault(target, f"export() returned {_what(paths)}; it must return a list of the paths it wrote")
        for path in paths:
            if not isinstance(path, str | os.PathLike):
                raise fault(target, f"export() returned {_what(path)} among its paths; each must be a path")
            if not Path(path).is_file():
                raise fault(target, f"export() returned {path}, which is not a file it wrote")
            stray = Path(path).absolute()
            if stray not in declared:
                if stray.parent == folder and stray.name not in before:
                    stray.unlink()
                raise fault(target, f"export() wrote {path}, which output_files() does not name (a run checks "
                                    "those against its inputs before any work)")
        return [Path(p) for p in paths]


def _what(value) -> str:
    """``value`` shown briefly, with its type."""
    shown = repr(value)
    return f"{shown[:60] + '...' if len(shown) > 60 else shown} ({type(value).__name__})"
