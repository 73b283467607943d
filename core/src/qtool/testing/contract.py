"""The platform contract: what every qtool platform plugin must get right.

Each ``check_*`` function returns a list of problems (empty: fine), each a
sentence naming the platform. :func:`check_platform` runs them all;
:class:`PlatformContract` runs them as pytest tests in a plugin's own suite.
"""

from __future__ import annotations

import json
import os
import stat
import re
import tempfile
from pathlib import Path

from ..config import resolve_config
from ..errors import QtoolError
from ..files import file_mode
from ..ir import from_model_proto, load
from ..pipeline import quantize
from ..platform import PLATFORMS, Capabilities, Diagnostic, ExportOptions, Severity
from ..platform_calls import validated
from ..plugins import PluginError, plugins
from ..quant import QuantScheme, quantized_tensors
from .handmade import quantize_by_hand, retarget
from .models import calibration_file, small_model, small_model_proto

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*$")
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
# Schemes few targets accept, to make validate() speak: 4-bit unsigned asymmetric activations, fp8 weights.
AWKWARD_ACTIVATION = QuantScheme.integer(4, signed=False, symmetric=False)
AWKWARD_WEIGHT = QuantScheme.floating(4, 3)


def check_registration(name: str) -> list[str]:
    """Registered through an entry point of group ``qtool``, once, with a plain lowercase name."""
    entries = PLATFORMS.entries()
    duplicate = sorted({f"{name}: {err}" for record in plugins() for err in record.errors
                        if err.startswith(f"platform {name!r} is registered ")})
    if duplicate:
        return duplicate
    if name not in entries:
        return [f"{name}: not registered (known platforms: {', '.join(sorted(entries)) or 'none'})"]
    problems = []
    source = entries[name].source
    if source is None:
        problems.append(f"{name}: registered by qtool's core, not through an entry point")
    elif source.errors:
        problems.append(f"{name}: its plugin {source.name!r} reported: {'; '.join(source.errors)}")
    if not _NAME.match(name):
        problems.append(f"{name}: the name should be lowercase letters and digits, joined by '-', '_' or '.'")
    return problems


def check_capabilities(name: str) -> list[str]:
    """Description, output format and capabilities declared, well-formed and JSON-able."""
    cls = PLATFORMS.get(name)
    problems = [f"{name}: class attribute {attr!r} is empty" for attr in ("description", "output_format")
                if not isinstance(getattr(cls, attr), str) or not getattr(cls, attr).strip()]
    caps = cls.capabilities
    if not isinstance(caps, Capabilities):
        return problems + [f"{name}: capabilities is {type(caps).__name__}, not qtool.Capabilities"]
    if not caps.bits or not all(isinstance(b, int) and 1 <= b <= 32 for b in caps.bits):
        problems.append(f"{name}: capabilities.bits {caps.bits!r} should be widths between 1 and 32")
    if not caps.policies:
        problems.append(f"{name}: capabilities.policies is empty")
    if caps.opsets is not None and not (len(caps.opsets) == 2 and 1 <= caps.opsets[0] <= caps.opsets[1]):
        problems.append(f"{name}: capabilities.opsets {caps.opsets!r} should be (lowest, highest)")
    if not caps.formats:
        problems.append(f"{name}: capabilities.formats is empty")
    try:
        json.dumps(cls.describe())
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: describe() is not JSON-serializable: {exc}")
    return problems


def check_default_config(name: str) -> list[str]:
    """``default_config()`` is a JSON-able dict that resolves, giving schemes the capabilities declare."""
    platform = PLATFORMS.get(name)()
    defaults = platform.default_config()
    if not isinstance(defaults, dict):
        return [f"{name}: default_config() returned {type(defaults).__name__}, not a dict"]
    try:
        json.dumps(defaults)
        config = resolve_config(defaults)
    except (TypeError, ValueError, QtoolError) as exc:
        return [f"{name}: default_config() does not resolve: {exc}"]
    caps, outside = platform.capabilities, {}
    graph = from_model_proto(small_model_proto())
    for op in graph.topological_order():
        if op.op_type not in config.quantize_op_types:
            continue
        for role in ("activation", "weight") if op.parameters() else ("activation",):
            scheme = config.scheme_for(op, role)
            if scheme is not None and not caps.supports(scheme):
                outside.setdefault((role, scheme.short()), op.name)
    return [f"{name}: the default {role} scheme {short} (op {op!r}) is outside the capabilities "
            f"(bits {caps.bits}, policies {'|'.join(caps.policy_names())})" for (role, short), op in outside.items()]


def check_export(name: str, graph, workdir: str | os.PathLike) -> list[str]:
    """Export twice into ``workdir``: paths returned, each one output_files() declares (a run checks those before
    any work), files complete, replaced by rename, same bytes, graph intact."""
    platform = PLATFORMS.get(name)()
    try:
        errors = [d for d in validated(platform, graph, ExportOptions()) if d.severity is Severity.ERROR]
    except PluginError as exc:
        return [f"{name}: {exc}"]
    if errors:
        return [f"{name}: rejects the calibrated test graph ({errors[0]}); give the contract a graph it accepts"]
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    before = snapshot(graph)
    paths = platform.export(graph, folder / "model", ExportOptions())
    problems = _returned_paths(name, paths, folder)
    if problems:
        return problems
    declared = {Path(p).absolute() for p in platform.output_files(folder / "model", ExportOptions())}
    problems += [f"{name}: export() wrote {p.name}, which output_files() does not name (a run could not check it "
                 "against its inputs)" for p in paths if Path(p).absolute() not in declared]
    first = {p: (p.read_bytes(), _keep_link(p)) for p in paths}
    again = platform.export(graph, folder / "model", ExportOptions())
    if sorted(map(str, again)) != sorted(map(str, paths)):
        problems.append(f"{name}: a second export returned other paths: {again} instead of {paths}")
    for path, (content, link) in first.items():
        if os.path.samefile(path, link):
            problems.append(f"{name}: {path.name} was rewritten in place; write a temporary file and os.replace it "
                            "(qtool.write_atomic)")
        elif link.read_bytes() != content:
            problems.append(f"{name}: the old {path.name} changed while a new one was written")
        if path.read_bytes() != content:
            problems.append(f"{name}: exporting the same graph twice gave different {path.name}")
        link.unlink()
    if snapshot(graph) != before:
        problems.append(f"{name}: export() changed the graph's quantization configs")
    return problems


def check_validate(name: str, graph) -> list[str]:
    """validate() leaves the graph alone and returns Diagnostics with a code, a message and real op/tensor names."""
    platform = PLATFORMS.get(name)()
    before = snapshot(graph)
    diagnostics = platform.validate(graph, ExportOptions())
    problems = [] if snapshot(graph) == before else [f"{name}: validate() changed the graph's quantization configs"]
    if not isinstance(diagnostics, list):
        return problems + [f"{name}: validate() returned {type(diagnostics).__name__}, not a list"]
    for d in diagnostics:
        problems += _diagnostic_problems(name, d, graph)
    return problems


def check_pipeline(name: str, workdir: str | os.PathLike) -> list[str]:
    """``qtool.quantize`` of the small model with the platform's own defaults passes validation and exports."""
    folder = Path(workdir)
    model = small_model(folder / "small.onnx")
    data = calibration_file(load(model), folder / "calib.npz")
    try:
        result = quantize(model, name, data, output=folder / "out" / "model")
    except QtoolError as exc:
        return [f"{name}: quantizing the small model with the platform's defaults failed: {exc}"]
    if not result.files or not all(Path(p).is_file() for p in result.files):
        return [f"{name}: the pipeline's export returned {result.files}, not the files it wrote"]
    return []


def awkward_graph(graph):
    """``graph`` with every quantized activation made 4-bit asymmetric and weights fp8, in place."""
    for entry in list(quantized_tensors(graph)):
        if entry.role == "activation":
            retarget(graph, entry.tensor, AWKWARD_ACTIVATION)
        elif entry.role == "weight":
            retarget(graph, entry.tensor, AWKWARD_WEIGHT)
    return graph


def check_platform(name: str, workdir: str | os.PathLike | None = None, graph=None) -> list[str]:
    """Every contract check on platform ``name``; ``graph`` defaults to the kit's small model quantized by hand."""
    problems = check_registration(name)
    if name not in PLATFORMS.entries():  # not registered, or by two plugins
        return problems
    problems += check_capabilities(name) + check_default_config(name)
    with tempfile.TemporaryDirectory(prefix="qtool-contract-") as scratch:
        folder = Path(workdir or scratch)
        if graph is None:
            graph = quantize_by_hand(load(small_model(folder / "small.onnx")))
        problems += check_validate(name, graph)
        problems += check_export(name, graph, folder / "export")
        problems += check_validate(name, awkward_graph(quantize_by_hand(load(small_model(folder / "awkward.onnx")))))
        problems += check_pipeline(name, folder / "pipeline")
    return problems


def snapshot(graph) -> list:
    """The graph's quantization decisions as comparable values."""
    state = []
    for op in graph.topological_order():
        configs = op.quant.inputs + op.quant.outputs if op.quant is not None else []
        state.append((op.name, [v.name for v in op.inputs if v is not None], [
            None if c is None else (c.state, c.scheme, _bytes(c.scale), _bytes(c.offset)) for c in configs]))
    return state


def _bytes(value):
    return None if value is None else (str(value.dtype), value.shape, value.tobytes())


def _returned_paths(name: str, paths, folder: Path) -> list[str]:
    if not isinstance(paths, list) or not paths:
        return [f"{name}: export() should return a non-empty list of the paths it wrote, got {paths!r}"]
    problems = [f"{name}: export() returned {p!r}, not a pathlib.Path" for p in paths if not isinstance(p, Path)]
    if problems:
        return problems
    for path in paths:
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{name}: export() returned {path}, which is not a non-empty file")
        elif path.resolve().parent != folder.resolve():
            problems.append(f"{name}: export() wrote {path} outside the output's folder {folder}")
        elif stat.S_IMODE(path.stat().st_mode) != file_mode():
            problems.append(f"{name}: {path.name} has mode {stat.S_IMODE(path.stat().st_mode):o}, not the umask's "
                            f"{file_mode():o}; other users cannot read it (write with qtool.write_atomic, or call "
                            "qtool.make_readable on it)")
    stray = sorted(p.name for p in folder.iterdir() if p not in set(paths))
    if stray:
        problems.append(f"{name}: export() left files it did not return: {', '.join(stray)}")
    return problems


def _keep_link(path: Path) -> Path:
    link = path.with_name(f"{path.name}.contract-link")
    os.link(path, link)
    return link


def _diagnostic_problems(name: str, d, graph) -> list[str]:
    if not isinstance(d, Diagnostic):
        return [f"{name}: validate() returned {d!r}, not a qtool.Diagnostic"]
    problems = []
    if not isinstance(d.severity, Severity):
        problems.append(f"{name}: diagnostic {d.code!r} has severity {d.severity!r}, not a qtool.Severity")
    if not isinstance(d.code, str) or not _CODE.match(d.code):
        problems.append(f"{name}: diagnostic code {d.code!r} should be a short identifier")
    if not isinstance(d.message, str) or not d.message.strip():
        problems.append(f"{name}: diagnostic {d.code!r} has no message")
    if d.op is not None and d.op not in graph.operations:
        problems.append(f"{name}: diagnostic {d.code!r} names op {d.op!r}, which is not in the graph")
    if d.tensor is not None and d.tensor not in graph.variables:
        problems.append(f"{name}: diagnostic {d.code!r} names tensor {d.tensor!r}, which is not in the graph")
    if isinstance(d.severity, Severity) and d.severity is not Severity.WARNING and d.op is None and d.tensor is None:
        problems.append(f"{name}: {d.severity.value} diagnostic {d.code!r} names neither an op nor a tensor")
    return problems


class PlatformContract:
    """Subclass as ``class TestMyPlatform(PlatformContract): platform_name = "my-platform"``.

    Override :meth:`calibrated_graph` when the platform rejects int8 activations
    with int8 per-channel weights (the kit's default hand quantization).
    """

    platform_name = ""

    def calibrated_graph(self, model_path: Path):
        return quantize_by_hand(load(model_path))

    def _assert_none(self, problems: list[str]) -> None:
        assert not problems, "\n".join(problems)

    def test_registered_through_an_entry_point(self):
        self._assert_none(check_registration(self.platform_name))

    def test_capabilities_are_declared(self):
        self._assert_none(check_capabilities(self.platform_name))

    def test_default_config_is_consistent(self):
        self._assert_none(check_default_config(self.platform_name))

    def test_export_writes_atomically(self, tmp_path):
        graph = self.calibrated_graph(small_model(tmp_path / "small.onnx"))
        self._assert_none(check_export(self.platform_name, graph, tmp_path / "export"))

    def test_defaults_quantize_and_export(self, tmp_path):
        self._assert_none(check_pipeline(self.platform_name, tmp_path))

    def test_validate_names_what_it_rejects(self, tmp_path):
        graph = self.calibrated_graph(small_model(tmp_path / "small.onnx"))
        self._assert_none(check_validate(self.platform_name, graph))
        self._assert_none(check_validate(self.platform_name, awkward_graph(graph)))
