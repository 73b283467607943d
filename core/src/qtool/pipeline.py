"""qtool.quantize: model + platform + calibration data -> a quantized model for the platform.

The steps, in order: platform, configuration (a bad one fails before any
work), model, calibration data, the default passes (qtool.passes.order),
the platform's validation (ERROR diagnostics stop the run before anything is
written, unless allowed), the state sidecar, export, the agreement check of the
exported files against qtool's simulation (where a step used the simulation, or
when asked), and float vs quantized measured on the exported files run by the
platform's runtime (qtool's simulation where it cannot run here).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import onnx

from .analysis.float_gap import FLOAT_GAP_SAMPLES, Deployed, budget_missed_held_out, far_from_float, float_gap
from .analysis.metrics import jsonable
from .calibration import CalibrationWarning, KeptOutputs, load_calibration_data
from .calibration.data import CalibrationData, check_reused
from .calibration.threads import one_thread, pass_threads, threads
from .config import resolve_config
from .config.names import check_names
from .control_flow import BodyStaysFloat, quantize_bodies
from .coverage import Coverage, coverage, initializers_as_inputs, low_coverage, nothing_quantized, prequantized
from .errors import QtoolError
from .files import check_not_inputs, check_output_given, check_outputs, user_path
from .ir import Graph, data_path, from_model_proto, load
from .ir.onnx_import import check_model_proto
from .one_at_a_time import one_at_a_time
from .ort_schemas import type_outputs
from .own_quantization import remove_fake_quantization
from .passes import PassManager, PassRun, PassWarning, StartOver
from .passes.order import check_accuracy, default_passes, planning_passes, try_metric_budget
from .passes.registry import check_pass_names
from .platform import (
    Diagnostic,
    ExportOptionError,
    ExportOptions,
    Platform,
    RuntimeUnavailable,
    Severity,
    get_platform,
    platform_step,
)
from .platform_calls import UnsupportedModelError, exported, refuse_unsupported, validated  # noqa: F401 - raised from here
from .platform_runtime import PlatformRuntime
from .quant.plan import configured, quantizes, written_config
from .requantization import wider_readers

AGREEMENT_SAMPLES = 4
AGREEMENT_STEPS = 2  # quantization steps between the written model's outputs and the simulation's still in agreement
AGREEMENT_COSINE = 0.99999  # ... or any number of steps at this cosine or above
AGREEMENT_ASK = "check_agreement=True (CLI --check-agreement) runs it"


class RuntimeRefusedError(QtoolError):
    """The written model does not load or run on the platform's runtime although no ERROR was reported."""


@dataclass
class QuantizeResult:
    """What :func:`quantize` did: the quantized graph and everything worth reporting."""

    graph: Graph
    config: Any  # qtool.config.QuantConfig
    diagnostics: list[Diagnostic]
    pass_runs: list[PassRun]
    files: list[Path] = field(default_factory=list)
    agreement: dict | None = None
    summary: dict = field(default_factory=dict)
    calibration: Any = field(default=None, repr=False)  # the CalibrationData used (for report())
    model: str = "graph"  # where the float model came from

    def report(self, path: str | os.PathLike | None = None, *, calib=None, samples: int = 16, device: str = "cpu"):
        """The HTML analysis report of this result (qtool.report.AnalysisReport), written to ``path`` when given;
        measured on ``calib`` (default: this run's calibration data)."""
        from .report import report_of

        analysis = report_of(self, self.calibration if calib is None else calib, samples=samples, device=device)
        if path is not None:
            analysis.to_html(path)
        return analysis


@dataclass
class Plan:
    """A model dispatched for a platform by the planning passes (``qtool explain``)."""

    graph: Graph
    config: Any
    platform: Platform
    pass_runs: list[PassRun]

    def findings(self) -> list[Diagnostic]:
        """The platform's validate on the plan: what it finds before calibration (no scale known yet)."""
        return validated(self.platform, self.graph, ExportOptions())


@one_at_a_time
def plan(model, platform, *, config=None, preset: str | None = None,
         finished: Callable[[PassRun], None] | None = None) -> Plan:
    """Simplify and dispatch ``model`` for ``platform`` without calibration data (passes 1-4)."""
    model, config = user_path(model), user_path(config)
    target, qconfig = _platform_and_config(platform, config, preset)
    check_accuracy(qconfig)  # as quantize does: a plan that looks fine has options a run can take
    graph = _graph(model, qconfig)
    runs = PassManager(planning_passes(qconfig, target), finished=finished).run(graph)
    return Plan(graph, qconfig, target, runs)


@one_at_a_time
def quantize(model, platform, calib=None, *, config=None, output: str | os.PathLike | None = None,
             export: ExportOptions | Mapping[str, Any] | None = None, save_state: str | os.PathLike | None = None,
             load_state: str | os.PathLike | None = None, device: str = "cpu", progress: bool = False,
             finished: Callable[[PassRun], None] | None = None, calib_layout: str | None = None,
             max_samples: int | None = None, transform: Callable | None = None, skip_nonfinite: bool = False,
             check_agreement: bool | None = None, report: str | os.PathLike | None = None,
             **earlier: Any) -> QuantizeResult:
    """Quantize ``model`` (a path, an onnx.ModelProto, or a Graph that is copied, never changed) for ``platform`` (a
    name or instance).

    ``calib`` is calibration data (see :func:`qtool.calibration.load_calibration_data`);
    it may be None when ``load_state`` names a state saved by an earlier run, or for weight-only quantization whose
    passes read only the weights (round-to-nearest, HQQ; not GPTQ or AWQ), which then measures no float vs quantized
    (``summary["float_vs_quantized"]["skipped"]`` says why). ``calib_layout="feeds"`` takes
    each file or item as one model call with the model's own shapes; ``max_samples`` keeps the first samples
    (model calls in the feeds layout, whatever each holds; up to 8 after them, never calibrated on, measure
    ``summary["float_vs_quantized"]``);
    ``transform(item)`` maps each item to the inputs (e.g. ``(inputs, labels)`` pairs of a DataLoader);
    ``skip_nonfinite`` drops samples holding NaN instead of refusing them (an infinity is a value, e.g. a mask's).
    ``summary["float_vs_quantized"]`` measures the written files on the platform's runtime where it runs here
    (``measured_on`` says so), else qtool's simulation. ``check_agreement`` compares the written files with qtool's
    simulation (``result.agreement``): None (the default) where a step of the run used the simulation, True
    always, False never; a runtime that refuses the written files fails the run either way. ``report``: a path
    the HTML report (:meth:`QuantizeResult.report`) is written to at the end, checked with the other files first.
    ``config`` is a config file path, a dict or an earlier result's ``.config``, merged over the platform's defaults
    (its ``preset`` key, ``[accuracy]`` table and ``fusion.remove_activations`` included).
    ``export`` is an :class:`ExportOptions` (opset, allow_unsupported, remove_activations: None takes the
    config's, and the platform's own options in ``extra``), or a mapping of the platform's own options
    (``Platform.export_options``; an unknown one fails before any work). ``finished(run)`` is called
    after each pass. Files are written only when ``output`` is given and validation found no ERROR
    (or ``allow_unsupported``). The earlier keywords ``preset``, ``accuracy``, ``opset``,
    ``allow_unsupported``, ``remove_activations`` and ``export_options`` still work. A path may start with ``~``.
    """
    model, calib, config, output, save_state, load_state, report = map(
        user_path, (model, calib, config, output, save_state, load_state, report))
    preset, accuracy, options = _earlier_keywords(earlier, export)
    _check_device(device)
    target, qconfig = _platform_and_config(platform, config, preset)
    target.check_export_options(options.extra)
    _check_opset(options.opset, target)
    written = _written_files(target, output, options, save_state, report)
    check_outputs(written, inputs=(model, calib, config, load_state))
    if report is not None:
        _check_reportable(calib)
    if accuracy:
        qconfig = dataclasses.replace(qconfig, accuracy=MappingProxyType({**qconfig.accuracy, **accuracy}),
                                      origins=MappingProxyType({**qconfig.origins,
                                                                **{f"accuracy.{k}": "accuracy=" for k in accuracy}}))
    check_accuracy(qconfig)  # before the model and the data are read
    if options.remove_activations is None:
        options = dataclasses.replace(options, remove_activations=qconfig.remove_activations)
    graph = _graph(model, qconfig)
    check_not_inputs(written, graph.info.sources)  # its external data, known once it is read
    _check_runnable(graph)
    if calib is None and load_state is None:
        _check_without_data(qconfig)
    if isinstance(calib, CalibrationData):
        check_reused(calib, graph)
    if calib is not None:
        try_metric_budget(qconfig, graph, device)  # the user's metric once on the float model, before the data
    data = None if calib is None else load_calibration_data(
        calib, graph, qconfig.calibration["batch_size"], layout=calib_layout, max_samples=max_samples,
        transform=transform, skip_nonfinite=skip_nonfinite)
    restore = None if load_state is None else _restore_state(load_state, qconfig)
    label = str(model) if isinstance(model, str | os.PathLike) else graph.info.graph_name
    result = _quantize_graph(graph, target, qconfig, data, options, label, output=output, save_state=save_state,
                             restore=restore, device=device, progress=progress, finished=finished,
                             check_agreement=check_agreement)
    if report is not None:
        result.report(report, device=device)
    return result


def _check_opset(opset: int | None, target: Platform) -> None:
    """An asked opset the platform writes (before any work: it was refused by validation, after the planning)."""
    if opset is None:
        return
    if target.capabilities.opsets is None:
        raise ExportOptionError(f"opset {opset} (--opset): platform {target.name!r} writes its files at the model's "
                                "own opset and takes no other")
    lowest, highest = target.capabilities.opsets
    if not lowest <= opset <= highest:
        raise ExportOptionError(f"opset {opset} (--opset): platform {target.name!r} writes opsets {lowest} to "
                                f"{highest}")


def _written_files(target: Platform, output, options: ExportOptions, save_state, report) -> dict[str, list]:
    """What a run writes, by what each file is (:func:`qtool.files.check_outputs`); the output as given too (a
    folder named there is a mistake, whatever name the platform derives from it)."""
    if output is not None:
        check_output_given(output)  # "" or "out/": the platform would derive a name from what is no file's
    given = [] if output is None else [Path(output)]
    files = [] if output is None else target.output_files(Path(output), options)
    return {"output": list(dict.fromkeys([*given, *files])), "state file": [save_state], "report": [report]}


def _check_reportable(calib) -> None:
    """The report's bundle is installed and there is data to measure it on, before any work."""
    from .report import require_bundle

    require_bundle()
    if calib is None:
        raise QtoolError("the report measures the quantized model on calibration data: give it (--calib)")


def _quantize_graph(graph: Graph, target: Platform, qconfig, data, options: ExportOptions, label: str, *,
                    output=None, save_state=None, restore=None, device: str = "cpu", progress: bool = False,
                    finished=None, check_agreement: bool | None = None, measure: bool = True) -> QuantizeResult:
    """Quantize a loaded graph (its control-flow bodies first, each as a model of its own), validate, export;
    ``measure``: the summary measures the written files against float (a body's is not: its model's is)."""
    simulated_before = simulation_runs()
    bodies = quantize_bodies(graph, data, lambda body, feeds, where: _quantize_body(
        body, feeds, where, target, qconfig, options, device, check_agreement), device)
    kept = _kept_outputs(data, restore) if measure else None
    runtime = _runtime(target, options)
    precheck = None if options.allow_unsupported or qconfig.passes else lambda planned: refuse_unsupported(
        target, _beyond_rescue(validated(target, planned, options), planned, qconfig), before_calibration=True,
        config=qconfig, graph=planned)
    graph, runs, diagnostics = _run_default_passes(graph, lambda advice: default_passes(
        qconfig, data, platform=target, device=device, progress=progress, calibration=restore, runtime=runtime,
        keep=kept, advice=advice, precheck=precheck), finished)
    diagnostics = [d for d in diagnostics if not _floated_since(graph, d)]
    diagnostics += bodies.explain(graph)
    covered = bodies.coverage(coverage(graph))
    diagnostics += low_coverage(covered) + prequantized(graph) + initializers_as_inputs(graph)
    diagnostics += wider_readers(graph)
    if measure:  # a control-flow body without compute is no model of its own
        diagnostics += nothing_quantized(graph)
    found = validated(target, graph, options)
    options = dataclasses.replace(options, diagnostics=tuple(found))  # export reads them instead of validating again
    diagnostics += found
    if not options.allow_unsupported:
        refuse_unsupported(target, diagnostics, config=qconfig, graph=graph)
    result = QuantizeResult(graph, qconfig, diagnostics, runs, calibration=data, model=label)
    simulated = None  # qtool's simulation of the first calibration samples, once the agreement check ran it
    if output is not None:
        with one_thread():  # a few small ops per weight (threads)
            result.files = exported(target, graph, Path(output), options)
        if data is not None:
            skipped = agreement_skipped(check_agreement, simulation_runs() > simulated_before, target)
            if skipped is None:
                samples = data.samples(AGREEMENT_SAMPLES)
                simulated = simulate(graph, samples, device)
                result.agreement = agreement(target, graph, result.files, samples, simulated)
                _check_agreement(result, options.allow_unsupported)
                result.diagnostics += disagreement(result.agreement)
            else:
                result.agreement = {"skipped": skipped}
        else:
            result.agreement = {"skipped": "no samples to run it on: " + _WITHOUT_DATA[restore is None]}
    if save_state is not None:  # after the files: an interrupted export leaves the old state beside the old model
        from .state import save_state as write_state

        restored = next((r.details.get("data_fingerprint") for r in runs if r.name == "RestoreState"), None)
        write_state(graph, save_state, config=qconfig, data_fingerprint=data.fingerprint() if data else restored)
    gap = None
    if data is not None and measure:
        gap = _float_vs_quantized(result, runtime, data, device, simulated, calibrated_on_data=restore is None,
                                  allowed=options.allow_unsupported, kept=kept)
        result.diagnostics += far_from_float(gap)
        budget = next((r.details.get("snr_budget_db") for r in reversed(runs) if r.name == "SensitivityFallback"),
                      None)
        result.diagnostics += budget_missed_held_out(gap, budget)
    result.summary = summarize(result, target, covered, save_state)
    result.summary["subgraphs"] = bodies.as_list()
    if gap is not None:
        result.summary["float_vs_quantized"] = gap
    elif data is None and measure:
        result.summary["float_vs_quantized"] = {"skipped": "no samples to run it on: " + _WITHOUT_DATA[restore is None],
                                                "samples": 0, "outputs": {}}
    return result


def _beyond_rescue(found: list[Diagnostic], planned: Graph, qconfig) -> list[Diagnostic]:
    """The plan's findings no pass after calibration can undo: those of an op (or of a tensor of an op) that the
    enabled fallback (its ``op_types``, any quantized op without) or OutlierOutputs (its MatMuls' outputs) may
    return to float are left to the final validation, as is everything where a plugin pass runs (the caller). A
    fallback whose ``max_ops``/``max_share`` allow no op of this model (the default's tenth of fewer than ten compute
    ops) rescues nothing."""
    from .passes.accuracy.fallback import changeable_ops

    rescued_types: set[str] | None = set()
    for name, default in (("fallback", None), ("outlier_outputs", ("MatMul",))):
        options = qconfig.accuracy.get(name)
        if options in (None, False):
            continue
        options = options if isinstance(options, Mapping) else {}
        if name == "fallback" and changeable_ops(planned, options.get("max_ops"), options.get("max_share")) == 0:
            continue
        types = options.get("op_types", default)
        if types is None:
            rescued_types = None
            break
        rescued_types |= set(types)
    rescuable = [op for op in planned.operations.values()
                 if op.quant is not None and op.quant.quantized
                 and (rescued_types is None or op.op_type in rescued_types)]
    ops = {op.name for op in rescuable}
    tensors = {v.name for op in rescuable for v in (*op.inputs, *op.outputs) if v is not None}
    return [d for d in found if d.op not in ops and d.tensor not in tensors]


_WITHOUT_DATA = {True: "the run had no calibration data (--calib)",
                 False: "a state was loaded without calibration data (--calib)"}


def _check_without_data(qconfig) -> None:
    """A run without calibration data nor a state: weight-only quantization (its round-to-nearest, and HQQ, read
    only the weights) whose enabled passes need no data; anything else is refused in one line."""
    if not qconfig.weight_only:
        raise QtoolError("calibration data is required (or a state saved by --save-state, with --load-state)")
    from .passes.accuracy import needs_data

    wanting = [name for name, value in qconfig.accuracy.items() if value not in (None, False) and needs_data(name)]
    if wanting:
        raise QtoolError(f"accuracy.{', accuracy.'.join(wanting)} run{'s' if len(wanting) == 1 else ''} the model "
                         "on calibration data: give it (--calib); weight-only round-to-nearest and HQQ need none")


def _quantize_body(model, feeds: list[dict], where: str, target: Platform, qconfig, options: ExportOptions,
                   device: str, check_agreement: bool | None) -> tuple[QuantizeResult, Any]:
    """One control-flow body (a ModelProto reading the outer tensors as inputs) quantized on the feeds it saw;
    the result and the exported ModelProto."""
    import onnx

    from .ir import from_model_proto

    graph = from_model_proto(model)
    data = load_calibration_data(feeds, graph, qconfig.calibration["batch_size"], layout="feeds")
    with tempfile.TemporaryDirectory(prefix="qtool-body-") as folder:
        output = Path(folder) / "body.onnx"
        _check_body_files(target, output, target.output_files(output, options))
        result = _quantize_graph(graph, target, qconfig, data, dataclasses.replace(options, diagnostics=None), where,
                                 output=output, device=device, check_agreement=check_agreement, measure=False)
        try:
            return result, onnx.load(str(output))
        except Exception as exc:  # noqa: BLE001 - a platform whose export is no ONNX model cannot quantize bodies
            raise QtoolError(f"{target.name} exports no ONNX model a subgraph can be made of "
                             f"({type(exc).__name__}: {exc})") from exc


def _check_body_files(target: Platform, model: Path, files: Sequence[Path]) -> None:
    """A body's quantization survives only in the ONNX model spliced into its op: a platform whose ``files`` (what
    its export writes) hold no such model, or files beside it (TensorRT's ranges, AIMET's encodings), cannot
    quantize a body; checked before the body's work."""
    files = [Path(f) for f in files]
    if model not in files:
        raise BodyStaysFloat(f"{target.name} exports no ONNX model a subgraph can be made of "
                             f"(it writes {', '.join(f.name for f in files) or 'nothing'})")
    beside = [f.name for f in files if f not in (model, data_path(model))]
    if beside:
        raise BodyStaysFloat(f"{target.name} writes the quantization in files beside the model "
                             f"({', '.join(beside)}), which a subgraph spliced into its op cannot carry")


_EARLIER_EXPORT = ("opset", "allow_unsupported", "remove_activations")


def _earlier_keywords(earlier: dict[str, Any], export) -> tuple[str | None, Mapping | None, ExportOptions]:
    """``preset``, ``accuracy`` and the export options, from ``export`` and the earlier keywords of quantize()."""
    unknown = sorted(set(earlier) - {"preset", "accuracy", "export_options", *_EARLIER_EXPORT})
    if unknown:
        raise TypeError(f"quantize() got an unexpected keyword argument {unknown[0]!r}")
    if isinstance(export, ExportOptions):
        options = dataclasses.replace(export, extra=dict(export.extra))
    else:
        options = ExportOptions(remove_activations=None, extra=dict(export or {}))
    for key in _EARLIER_EXPORT:
        if earlier.get(key) is not None:
            options = dataclasses.replace(options, **{key: earlier[key]})
    options.extra.update(earlier.get("export_options") or {})
    return earlier.get("preset"), earlier.get("accuracy"), options


def agreement(target: Platform, graph: Graph, files: list[Path], samples: list[dict],
              simulated: list[list]) -> dict | None:
    """The platform's comparison of its files with qtool's simulation (``simulated``, :func:`simulate` of
    ``samples``) on a few calibration samples."""
    with platform_step(target, "agreement"):
        return target.agreement(graph, files, samples, simulated)


def simulation_runs() -> int:
    """How many graph runs qtool's simulation (the torch executor) made in this process so far; 0 while its module
    was never imported (reading it imports nothing)."""
    executor = sys.modules.get("qtool.executor.executor")
    return 0 if executor is None else executor.runs()


def agreement_skipped(check: bool | None, simulation_used: bool, target: Platform) -> str | None:
    """Why the agreement check does not run, or None where it runs: ``check`` True always, False never, None
    where a step of the run used qtool's simulation (what it decided rests on the simulation agreeing with the
    runtime); never where the platform cannot compare its files (it keeps :meth:`Platform.agreement`'s default)."""
    if type(target).agreement is Platform.agreement:
        return f"platform {target.name!r} runs no files here to compare with"
    if check or (check is None and simulation_used):
        return None
    if check is False:
        return f"check_agreement=False; {AGREEMENT_ASK}"
    return f"no step of this run used qtool's simulation; {AGREEMENT_ASK}"


def simulate(graph: Graph, samples: list[dict], device: str = "cpu") -> list[list]:
    """qtool's simulated outputs (graph output order) of each sample, one at a time: small ops, on one thread (see
    :mod:`qtool.calibration.threads`)."""
    from .executor import TorchExecutor

    executor = TorchExecutor(graph, device=device)
    with one_thread():
        return [executor.forward(sample) for sample in samples]


def summarize(result: QuantizeResult, target: Platform, covered: Coverage,
              state: str | os.PathLike | None = None) -> dict:
    """A JSON-able summary: ops quantized / kept float (with reasons), ``covered`` (the compute ops' coverage,
    control-flow bodies included), diagnostics, pass timings, files."""
    ops = list(result.graph.operations.values())
    kept_float = Counter(op.quant.reason for op in ops if op.quant is not None and not op.quant.quantized)
    return {
        "platform": target.name,
        "ops": {"total": len(ops), "quantized": sum(1 for op in ops if op.quant is not None and op.quant.quantized),
                "float": sum(kept_float.values()), "float_reasons": dict(kept_float.most_common())},
        "coverage": covered.as_dict(),
        "diagnostics": {s.value: sum(1 for d in result.diagnostics if d.severity is s) for s in Severity},
        "passes": [{"name": r.name, "seconds": round(r.seconds, 4), "modified": r.modified,
                    "details": jsonable(r.details)} for r in result.pass_runs],
        "agreement": result.agreement,
        "files": [str(p) for p in result.files],
        "state": str(state) if state is not None else None,
    }


# -- steps -------------------------------------------------------------------------------
def _platform_and_config(platform, config, preset: str | None):
    target = platform if isinstance(platform, Platform) else get_platform(platform)
    with platform_step(target, "default_config"):
        defaults = target.default_config()
    qconfig = resolve_config(defaults, config, preset=preset)
    check_pass_names(qconfig)
    return target, qconfig


def _graph(model, qconfig) -> Graph:
    """The model to work on (loaded from its path, read from an onnx.ModelProto, or a copy of the Graph given, which
    stays as it was; contrib ops' outputs typed, :func:`qtool.ort_schemas.type_outputs`; its own fake quantization
    removed, :mod:`qtool.own_quantization`), with the op and tensor names the configuration names checked against
    it (against the whole model for a segment)."""
    if isinstance(model, Graph):
        graph = model.copy()
    elif isinstance(model, onnx.ModelProto):
        check_model_proto(model)
        graph = from_model_proto(model)
    elif isinstance(model, str | os.PathLike):
        graph = load(model)
    else:
        raise QtoolError(f"model: expected the path of an ONNX file, an onnx.ModelProto or a qtool Graph, got "
                         f"{type(model).__name__}")
    type_outputs(graph)
    if qconfig.model_quantization == "requantize":
        graph.info.removed_quantization = remove_fake_quantization(graph) or graph.info.removed_quantization
    if graph.part_of is None:
        check_names(qconfig, graph, str(model) if isinstance(model, str | os.PathLike) else "the model")
    return graph


def _restore_state(path, qconfig):
    """The RestoreState pass of ``load_state`` (imported only then), told the reshaping passes asked for."""
    from .passes.accuracy import BEFORE_DISPATCH, REWRITING_WEIGHTS
    from .passes.restore_state import RestoreState

    return RestoreState(path, {name: qconfig.accuracy.get(name) for name in BEFORE_DISPATCH},
                        {name: qconfig.accuracy.get(name) for name in REWRITING_WEIGHTS}, qconfig.calibration)


def _check_runnable(graph: Graph) -> None:
    """UnsupportedOpsError now, naming every op without an implementation, rather than at calibration."""
    from .executor.plugin_ops import load_plugin_ops
    from .executor.support import check_supported

    load_plugin_ops()
    check_supported(graph)


def _run_default_passes(graph: Graph, make_passes: Callable[[dict | None], list], finished
                        ) -> tuple[Graph, list[PassRun], list[Diagnostic]]:
    """Run ``make_passes(None)`` on ``graph``; where a pass asks to start over (:class:`StartOver`: it let
    calibration's float run decide for it, and must act), run ``make_passes(advice)`` from that pass on, on a copy
    of the graph as that pass found it (made only where a pass may ask, when it starts: it shares the arrays the
    passes before it wrote, where a copy made before them kept every weight equalization replaced alive too). The
    first run's time from that pass on is one more entry of the runs."""
    passes = make_passes(None)
    asking = next((i for i, p in enumerate(passes) if getattr(p, "may_start_over", False)), len(passes))
    runs, diagnostics = _run_passes(passes[:asking], graph, finished)
    if asking == len(passes):
        return graph, runs, diagnostics
    pristine = graph.copy()
    start = time.perf_counter()
    try:
        later, found = _run_passes(passes[asking:], graph, finished, ran=runs)
        return graph, runs + later, diagnostics + found
    except StartOver as over:
        advice = over.advice
    # past the except block: the first run's frames (their sessions, observers and graph) are let go of
    del passes, graph
    first = PassRun("StartOver", False, time.perf_counter() - start, {"acts": sorted(advice)})
    if finished:
        finished(first)
    again = make_passes(advice)[asking:]
    later, found = _run_passes(again, pristine, finished, ran=runs)
    return pristine, [*runs, first, *later], diagnostics + found


def _run_passes(passes, graph: Graph, finished, ran: Sequence[PassRun] = ()
                ) -> tuple[list[PassRun], list[Diagnostic]]:
    """Run the passes (after those that ``ran``); their warnings (PassWarning, calibration warnings) come back as
    diagnostics."""
    with warnings.catch_warnings(record=True) as caught, threads(pass_threads()):
        warnings.simplefilter("always", PassWarning)
        warnings.simplefilter("always", CalibrationWarning)  # reported as diagnostics whatever the user's filters
        runs = PassManager(passes, finished=finished, ran=[run.name for run in ran]).run(graph)
    diagnostics = []
    for item in caught:
        if isinstance(item.message, PassWarning):
            w = item.message
            diagnostics.append(Diagnostic(Severity.WARNING, w.code, str(w), op=w.op, tensor=w.tensor))
        elif isinstance(item.message, CalibrationWarning):  # the data's: samples skipped or cut
            found = Diagnostic(Severity.WARNING, "calibration.data", str(item.message))
            diagnostics += [] if found in diagnostics else [found]
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return runs, diagnostics


def _floated_since(graph: Graph, found: Diagnostic) -> bool:
    """A calibration warning about a tensor's grid where a later pass (OutlierOutputs, the fallback) kept the
    tensor float: no written file holds that grid. Where calibration itself kept it float (a mask: the warning is
    the reason its configs hold), the warning says just that, and stays."""
    var = graph.variables.get(found.tensor) if found.code == "calibration" and found.tensor else None
    if var is None or written_config(var, settled=False) is not None:
        return False
    if any(tqc.notes.get("reason") == found.message for op in {*var.consumers, var.producer} - {None}
           for _, _, v, tqc in configured(op) if v is var):
        return False
    return not any(quantizes(tqc, settled=False) for op in var.consumers if op.quant is not None
                   for v, tqc in zip(op.inputs, op.quant.inputs, strict=False) if v is var)


def _runtime(target: Platform, options: ExportOptions):
    """The platform's runtime for the passes that measure on it: the graph exported with ``options``, run by
    :meth:`Platform.run` (:class:`qtool.platform_runtime.PlatformRuntime`)."""
    return PlatformRuntime(target, options)


def disagreement(report: dict | None) -> list[Diagnostic]:
    """A WARNING where the written model's output lies more than ``AGREEMENT_STEPS`` quantization steps from qtool's
    simulation, with a cosine below ``AGREEMENT_COSINE``: what the simulation measured (the sensitivity fallback's
    SNR, --optimize's) may not hold there; also where elements are NaN or infinite in one of the two alone."""
    nonfinite = {name: o["nonfinite_differs"] for name, o in (report or {}).get("outputs", {}).items()
                 if o.get("nonfinite_differs")}
    if nonfinite:
        name, count = next(iter(nonfinite.items()))
        return [Diagnostic(Severity.WARNING, "agreement.differs",
                           f"the written model's output holds {count} element(s) NaN or infinite where qtool's "
                           f"simulation's are finite, or the reverse, on {report['runtime']}: what the simulation "
                           "measured may not hold there", tensor=name)]
    steps = (report or {}).get("max_steps")
    if steps is None or steps <= AGREEMENT_STEPS:
        return []
    worst = max((name for name, o in report["outputs"].items() if o.get("max_steps") is not None),
                key=lambda name: report["outputs"][name]["max_steps"])
    cosine = report["outputs"][worst].get("cosine", 0.0)
    if cosine >= AGREEMENT_COSINE:  # an integer kernel's one-step jitter upstream, counted on a finer output grid
        return []  # (a uint8 tensor read at int16: 84 steps, same SNR)
    return [Diagnostic(Severity.WARNING, "agreement.differs",
                       f"the written model's output lies up to {steps:g} quantization steps from qtool's simulation "
                       f"on {report['runtime']} (cosine {cosine:.6f}): what is measured in simulation (a sensitivity "
                       "fallback's budget, --optimize's choices, qtool analyse's ranking) may read otherwise there; "
                       "the summary's SQNR is the written model's; the platform's other warnings may say why",
                       tensor=worst)]


def _check_agreement(result: QuantizeResult, allowed: bool) -> None:
    """A runtime that refuses the written model fails the run, unless ERRORs were allowed (then it is expected)."""
    refused = (result.agreement or {}).get("error")
    if refused and not allowed:
        raise RuntimeRefusedError(_refusal(result.files, result.agreement.get("runtime", "the runtime"), refused))


def _refusal(files: list[Path], runtime: str, error: str) -> str:
    return f"{files[0]}: {runtime} cannot run the written model ({error}); the files are kept for a bug report"


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _check_device(device: str) -> None:
    """A device torch can name (``cpu``, ``cuda``, ``cuda:1``...), checked before any work; torch is imported only
    for another device than the CPU, to ask whether it is there (CUDA missing failed in calibration)."""
    kind, _, index = str(device).partition(":")
    if kind not in DEVICE_TYPES or (index and not index.isdigit()):
        raise QtoolError(f"device {device!r}: expected one of {', '.join(DEVICE_TYPES)}, optionally with ':N' "
                         "(e.g. cuda:1)")
    if kind != "cpu":
        from .executor.executor import torch_device

        torch_device(device)


def _kept_outputs(data, restore) -> KeptOutputs | None:
    """What calibration keeps of the graph outputs for float_vs_quantized's reference: where it calibrates on
    ``data`` and no samples are held out (float_gap then measures the first calibration samples)."""
    if data is None or restore is not None or data.max_samples is not None:
        return None
    return KeptOutputs(FLOAT_GAP_SAMPLES)


def _float_vs_quantized(result: QuantizeResult, runtime: PlatformRuntime, data, device: str, simulated, *,
                        calibrated_on_data: bool, allowed: bool, kept: KeptOutputs | None = None) -> dict:
    """:func:`float_gap` of the written files on the platform's runtime (the deployed model) where it runs here,
    else of qtool's simulation; ``runtime`` runs them (:meth:`PlatformRuntime.run_files`: the fallback's gate may
    have run the same bytes on the same samples already); ``kept``: the graph outputs' float values calibration
    kept, the reference where still valid. A runtime that refuses the files fails the run (RuntimeRefusedError),
    unless ERRORs were allowed: then the simulation is measured and ``runtime_error`` says why."""
    refused = None
    if result.files:
        name = runtime.platform.runtime()
        deployed = Deployed(name, lambda samples, names: _run_files(runtime, result.files, name, samples, names))
        try:
            return float_gap(result.graph, data, device, calibrated_on_data=calibrated_on_data, deployed=deployed,
                             kept=kept)
        except RuntimeUnavailable:
            pass
        except RuntimeRefusedError as exc:
            if not allowed:
                raise
            refused = str(exc.__cause__ or exc).strip().splitlines()[0]
    gap = float_gap(result.graph, data, device, calibrated_on_data=calibrated_on_data, simulated=simulated,
                    kept=kept)
    if refused is not None:
        gap["runtime_error"] = refused
    return gap


def _run_files(runtime: PlatformRuntime, files: list[Path], name: str, samples: list[dict], names: list[str]
               ) -> list:
    """:meth:`PlatformRuntime.run_files`; the runtime's own error (it refuses the files) as RuntimeRefusedError."""
    try:
        return runtime.run_files(files, samples, names)
    except QtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the runtime raised: it cannot run these files
        raise RuntimeRefusedError(_refusal(files, name, str(exc).strip().splitlines()[0])) from exc
