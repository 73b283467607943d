"""``qtool quantize``: the whole pipeline from the command line, with a pass-by-pass progress display."""

from __future__ import annotations

import argparse
import json
import math
import sys

from rich.console import Console
from rich.markup import escape

from ..errors import QtoolError
from .calib_args import add_calibration_flags, calibration_options
from .console import console, pass_progress
from .explain import explain_document, print_explanation
from .metric_file import load_metric

QUANTIZE_SCHEMA_VERSION = 1
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "performance": "cyan"}


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model for a platform from calibration data")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--platform", required=True, help="target platform (see list-platforms)")
    p.add_argument("--calib", help="calibration data: .npz file, directory of .npy/.npz, or ONNX test data "
                   "(a folder of test_data_set_* folders of input_*.pb, or one of them) (required unless "
                   "--load-state, or for weight-only quantization without GPTQ/AWQ, which reads "
                   "only the weights)")
    add_calibration_flags(p)
    p.add_argument("--config", help="configuration file (TOML, YAML or JSON)")
    p.add_argument("--preset", help="named starting point of the configuration")
    p.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    p.add_argument("--device", default="cpu", help="device for calibration and simulation (cpu, cuda, cuda:N)")
    p.add_argument("--opset", type=int, help="ONNX opset of the exported model")
    p.add_argument("--export-option", action="append", default=[], metavar="KEY=VALUE", dest="export_options",
                   help="an export option of the platform (see list-platforms --json); repeatable")
    p.add_argument("--allow-unsupported", action="store_true",
                   help="export even when the platform reports errors (they are shown as warnings)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--remove-activations", dest="remove_activations", action="store_const", const=True,
                       help="drop Relu/Clip at export where the quantized range clips exactly")
    group.add_argument("--keep-activations", dest="remove_activations", action="store_const", const=False,
                       help="keep every activation op in the exported model")
    p.add_argument("--save-state", metavar="FILE", help="save the calibrated state (JSON) for a later --load-state")
    p.add_argument("--load-state", metavar="FILE", help="take the calibrated state from FILE instead of --calib")
    p.add_argument("--check-agreement", action=argparse.BooleanOptionalAction, default=None,
                   help="compare the written model with qtool's simulation on a few samples (default: only where a "
                        "step of the run used the simulation, e.g. --optimize or --min-snr)")
    p.add_argument("--explain", action="store_true", help="print how each op was quantized")
    p.add_argument("--json", action="store_true",
                   help="print the summary and every diagnostic as JSON on stdout (progress stays on stderr)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write the self-contained HTML report (charts, histograms, dispatch table) to FILE.html; "
                   "needs the 'report' extra")
    p.add_argument("--optimize", action="store_true",
                   help="turn on the accuracy passes equalization and adaround")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--min-snr", type=float, metavar="DB",
                        help="return the most sensitive ops to float until the output SNR (every floating-point "
                        "output's) is at least DB")
    budget.add_argument("--metric", metavar="FILE.py:FUNCTION",
                        help="your accuracy metric, FUNCTION(executor) -> float; with --max-drop")
    p.add_argument("--max-drop", type=float, metavar="X",
                   help="return the most sensitive ops to float until --metric is at most X below float")
    p.add_argument("--by-blocks", type=float, metavar="MB",
                   help="quantize segment by segment, about MB of weights at a time, for a model larger than "
                        "memory (weights stay mapped from its external data; the output gets external data)")
    p.set_defaults(handler=run, remove_activations=None)


def accuracy_flags(args) -> dict:
    """The [accuracy] passes that --optimize, --min-snr and --metric with --max-drop turn on."""
    enabled: dict = {}
    if args.optimize:
        enabled.update(equalization=True, adaround=True)  # bias_correction lowered PP-OCRv4 rec accuracy
    if args.min_snr is not None:
        if not math.isfinite(args.min_snr) or args.min_snr < 0:
            raise QtoolError(f"--min-snr {args.min_snr:g}: the output SNR budget is a finite number of dB, at least 0")
        enabled["fallback"] = {"min_snr_db": args.min_snr}
    if (args.metric is None) != (args.max_drop is None):
        raise QtoolError("--metric and --max-drop go together: the budget is the metric's drop from float")
    if args.metric is not None:
        enabled["fallback"] = {"metric": load_metric(args.metric), "max_drop": args.max_drop}
    return enabled


def check_agreement(args) -> bool | None:
    """--check-agreement / --no-check-agreement; --report (which shows it beside the simulation's errors) turns it
    on unless told otherwise; else None: where a step of the run used the simulation."""
    if args.check_agreement is None and args.report:
        return True
    return args.check_agreement


def export_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as a dict; ``true``/``false`` become booleans, whole numbers integers (``accuracy_level=4``
    was refused as the text '4'), other values stay strings. A key given twice is refused (the last one won)."""
    options, given = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QtoolError(f"--export-option {pair!r}: expected KEY=VALUE")
        if key in given:
            raise QtoolError(f"--export-option {pair!r}: {key} is already given ({given[key]!r}): give each key once")
        given[key] = pair
        text = value.strip()
        whole = text.lstrip("-").isdigit()
        options[key] = int(text) if whole else {"true": True, "false": False}.get(text.lower(), text)
    return options


def run(args) -> int:
    from ..pipeline import UnsupportedModelError, quantize

    out = console()
    if args.by_blocks is not None:
        return run_by_blocks(args, out)
    finished = pass_progress(f"quantizing {args.model} for {args.platform}")
    try:
        result = quantize(args.model, args.platform, args.calib, config=args.config, preset=args.preset,
                          output=args.output, device=args.device, allow_unsupported=args.allow_unsupported,
                          opset=args.opset, remove_activations=args.remove_activations, save_state=args.save_state,
                          load_state=args.load_state, accuracy=accuracy_flags(args),
                          export_options=export_options(args.export_options), progress=True,
                          finished=finished, check_agreement=check_agreement(args), report=args.report,
                          **calibration_options(args))
    except UnsupportedModelError as refusal:
        if args.json:
            print(json.dumps({"schema_version": QUANTIZE_SCHEMA_VERSION, "refused": str(refusal),
                              "diagnostics": [d.as_dict() for d in refusal.diagnostics]}, indent=2))
        raise
    explained = explain_document(result.graph, result.summary["platform"], result.config) if args.explain else None
    if args.json:
        print(json.dumps(quantize_document(result, explained), indent=2))
        return 0
    if explained:
        print_explanation(explained, out, result.config)
    print_summary(result, out, allowed=args.allow_unsupported)
    if args.report:
        out.print(f"wrote {escape(args.report)}")
    return 0


_NOT_BY_BLOCKS = ("save_state", "load_state", "report", "explain", "optimize", "min_snr", "metric")


def run_by_blocks(args, out) -> int:
    """``--by-blocks MB``: :func:`qtool.by_blocks.quantize_by_blocks`, one line per segment."""
    from ..platform import ExportOptions

    used = [f"--{name.replace('_', '-')}" for name in _NOT_BY_BLOCKS if getattr(args, name) not in (None, False)]
    if used:
        raise QtoolError(f"--by-blocks does not combine with {', '.join(used)}")
    if not math.isfinite(args.by_blocks) or args.by_blocks <= 0:
        raise QtoolError(f"--by-blocks {args.by_blocks:g}: the segment size must be a positive, finite number of MB")
    if args.calib is None:
        raise QtoolError("--by-blocks calibrates each segment on the data streamed through the ones before: "
                         "give --calib")
    options = calibration_options(args)
    if options.pop("skip_nonfinite"):
        raise QtoolError("--by-blocks does not combine with --calib-skip-nonfinite")
    export = ExportOptions(opset=args.opset, remove_activations=args.remove_activations,
                           allow_unsupported=args.allow_unsupported, extra=export_options(args.export_options))
    log = None if args.json else (lambda line: out.print(escape(line)))
    from ..by_blocks import quantize_by_blocks  # torch (the segments' float runs): once the flags are checked

    result = quantize_by_blocks(args.model, args.platform, args.calib, output=args.output, config=args.config,
                                preset=args.preset, export=export, block_bytes=int(args.by_blocks * 2**20),
                                device=args.device, log=log, **options)
    if args.json:
        print(json.dumps({"schema_version": QUANTIZE_SCHEMA_VERSION, "by_blocks": {
            "files": [str(p) for p in result.files], "segments": result.segments, "agreement": result.agreement,
            "seconds": round(result.seconds, 3)}}, indent=2))
        return 0
    agreement = result.agreement or {}
    data = " and its data" if len(result.files) > 1 else ""
    out.print(f"wrote {escape(str(result.files[0]))}{data} in {len(result.segments)} segments "
              f"({result.seconds:.0f} s); {escape(agreement.get('runtime', 'the runtime'))} agrees with qtool's "
              f"simulation to cosine {agreement.get('min_cosine')}")
    return 0


def quantize_document(result, explained: dict | None = None) -> dict:
    """The ``quantize --json`` document (schema version 1): the summary, every diagnostic, the explanation."""
    document = {"schema_version": QUANTIZE_SCHEMA_VERSION, "summary": result.summary,
                "diagnostics": [d.as_dict() for d in result.diagnostics]}
    if explained is not None:
        document["explain"] = explained
    return document


def print_summary(result, console: Console, *, allowed: bool = False) -> None:
    """Ops quantized / kept float, diagnostics by severity, time, agreement and files."""
    from ..platform import Severity

    summary = result.summary
    ops = summary["ops"]
    console.print(f"[bold]{ops['quantized']}[/bold] of {ops['total']} ops quantized, {ops['float']} kept float")
    for reason, count in ops["float_reasons"].items():
        console.print(f"  {count:>4} x {escape(reason)}")
    cover = summary["coverage"]
    if cover["compute_ops"]:
        console.print(f"[bold]{cover['compute_ops_quantized']}[/bold] of {cover['compute_ops']} compute ops quantized")
    lowest = _lowest_sqnr(summary.get("float_vs_quantized"))
    for line in (*calibration_lines(result), *table_lines(result.pass_runs), *outlier_lines(result.pass_runs),
                 *fallback_lines(result.pass_runs, lowest)):
        console.print(line)
    for severity in Severity:
        found = [d for d in result.diagnostics if d.severity is severity]
        if not found:
            continue
        label = "errors, exported anyway as allowed" if severity is Severity.ERROR and allowed else severity.value
        style = "yellow" if severity is Severity.ERROR and allowed else SEVERITY_STYLE[severity.value]
        console.print(f"[{style}]{len(found)} {label}[/{style}]")
        for line in diagnostic_lines(found):
            console.print(f"  {escape(line)}")
    total = sum(p["seconds"] for p in summary["passes"])
    console.print(f"passes: {len(summary['passes'])} in {total:.2f} s")
    for line in float_gap_lines(summary.get("float_vs_quantized")):
        console.print(line)
    for line in agreement_lines(summary["agreement"]):
        console.print(line)
    for path in summary["files"]:
        console.print(f"wrote {escape(path)}")
    if summary["state"]:
        console.print(f"state saved to {escape(summary['state'])}")


SHOWN_PER_CODE = 3  # diagnostics of one code printed; --json lists every one


def diagnostic_lines(found: list) -> list[str]:
    """Each diagnostic on a line, but at most ``SHOWN_PER_CODE`` of one code, then how many more there are: a state
    space model's 35 near-identical calibration warnings hid the rest of the summary."""
    shown: dict[str, int] = {}
    lines = []
    for diagnostic in found:
        shown[diagnostic.code] = shown.get(diagnostic.code, 0) + 1
        if shown[diagnostic.code] <= SHOWN_PER_CODE:
            lines.append(str(diagnostic))
    lines += [f"... and {count - SHOWN_PER_CODE} more [{code}] (--json lists every one)"
              for code, count in shown.items() if count > SHOWN_PER_CODE]
    return lines


def agreement_lines(agreement: dict | None) -> list[str]:
    """The written model against qtool's simulation, or why that was not checked (nothing where the platform's
    runtime cannot run here)."""
    if not agreement:
        return []
    if "skipped" in agreement:
        reason = agreement["skipped"].replace("check_agreement=True (CLI --check-agreement)", "--check-agreement")
        return [f"agreement with qtool's simulation not checked: {escape(reason)}"]
    facts = ", ".join(f"{k} {v}" for k, v in agreement.items() if v is not None and not isinstance(v, dict | list))
    return [f"agreement: {escape(facts)} (the written model against qtool's simulation, not float)"]


def float_gap_lines(gap: dict | None) -> list[str]:
    """Float vs quantized per output: what the quantization costs (the agreement line only checks the export)."""
    from ..analysis.float_gap import sqnr_text  # the measure's own module: loaded by the run that made ``gap``

    if gap and gap.get("skipped"):
        return [f"float vs quantized not measured: {escape(gap['skipped'])}"]
    if not gap or not gap["outputs"]:
        return []
    unit = gap.get("unit", "sample")
    units = unit if gap["samples"] == 1 else f"{unit}s"
    if gap["held_out"]:
        where = f"held-out {units}"
    elif gap.get("from_state"):
        where = f"{units} of the data (the state file's calibration saw data of its own)"
    else:
        where = f"calibration {units} (seen by calibration; --calib-samples N below the data's size holds the rest out)"
    lines = [f"float vs quantized on {gap['samples']} {where}, measured on {escape(gap['measured_on'])}:"]
    if gap.get("runtime_error"):
        lines.append(f"  (the runtime refused the written model: {escape(gap['runtime_error'])})")
    for name, o in gap["outputs"].items():
        if o.get("empty"):
            lines.append(f"  {escape(name)}: empty on every sample in both models: nothing compared")
            continue
        if "equal_share" in o:
            lines.append(f"  {escape(name)}: {100 * o['equal_share']:.2f} % of its elements as the float model's")
            continue
        differs = o.get("shape_differs")
        shapes = f"its shape differs from the float model's on {differs} of {gap['samples']} {units}"
        if o["cosine"] is None:
            lines.append(f"  {escape(name)}: {shapes}")
            continue
        nonfinite = o.get("nonfinite_differs")
        lines.append(f"  {escape(name)}: SQNR {sqnr_text(o)}, cosine {o['cosine']:.6f}"
                     + (f" ({shapes}, measured on the others)" if differs else "")
                     + (f" ({nonfinite} elements NaN or infinite in one model only, left out)" if nonfinite else ""))
    return lines


def calibration_lines(result) -> list[str]:
    """How many samples (model calls, in the feeds layout) calibration read: the progress bar said it only on a
    terminal, and --calib-samples N was not confirmed."""
    data = result.calibration
    lines = []
    for run in result.pass_runs:
        if run.name == "RuntimeCalibration" and run.details.get("samples"):
            count = run.details["samples"]
            unit = "model call" if data is not None and data.layout == "feeds" else "sample"
            first = " (the first of the data: --calib-samples)" if data is not None and data.max_samples else ""
            lines.append(f"calibrated on {count} {unit}{'s' * (count != 1)}{first}")
    return lines


def table_lines(runs) -> list[str]:
    """The ranges calibration took from a whole table of routed weights (a mixture of experts' Gather of a constant
    of rank >= 3), not from the rows its data routed to."""
    lines = []
    for run in runs:
        if run.name == "RuntimeCalibration" and run.details.get("tables"):
            tables = run.details["tables"]
            lines.append(f"ranges from the whole table of routed weights, not the rows the data chose: "
                         f"{len(tables)} tensor{'s' * (len(tables) != 1)}")
            lines += [f"  {escape(e['tensor'])} (at {escape(e['op'])}): every row of {escape(e['table'])}"
                      for e in tables]
    return lines


def outlier_lines(runs) -> list[str]:
    """What ChannelSplit and OutlierOutputs changed, each layer with its outlier ratio (nothing when they did not)."""
    lines = []
    for run in runs:
        if run.name == "ChannelSplit" and run.details.get("split"):
            split = run.details["split"]
            lines.append(f"channel split, outlier input channels read as int8 copies: {_layers(len(split))}")
            lines += [f"  {escape(e['op'])}: +{e['extra_channels']} of {e['channels']} input channels (input channel "
                      f"outlier {e['outlier_ratio']:.3g}x median)" for e in split]
        elif run.name == "OutlierOutputs" and run.details.get("float_outputs"):
            floated = run.details["float_outputs"]
            lines.append(f"outlier outputs written float by the integer kernel: {_layers(len(floated))}")
            lines += [f"  {escape(e['op'])} (output channel outlier {e['outlier_ratio']:.3g}x median)"
                      for e in floated]
    return lines


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _lowest_sqnr(gap: dict | None) -> float | None:
    """The lowest output SQNR of the float-vs-quantized measure, None where none was measured."""
    values = [found["sqnr_db"] for found in ((gap or {}).get("outputs") or {}).values()
              if found.get("sqnr_db") is not None]
    return min(values, default=None)


def fallback_lines(runs, lowest_sqnr_db: float | None = None) -> list[str]:
    """What the sensitivity fallback did: its budget, the score before and after, and each op it changed; where
    the default's share allowed it no op and an output reads below 30 dB (``lowest_sqnr_db``), how to ask for
    more."""
    fallback = sys.modules.get("qtool.passes.accuracy.fallback")  # not imported: the fallback did not run
    reports = [] if fallback is None else [r.report for r in runs if isinstance(r.report, fallback.FallbackReport)]
    lines = []
    for report in reports:
        if not report.candidates:  # budget: "none (no candidate op)" or "none (max_share allows no op)"
            low = lowest_sqnr_db is not None and lowest_sqnr_db < fallback.DEFAULT_MIN_SNR_DB
            more = "; a budget of yours (--min-snr, or --metric with --max-drop) lifts that limit" \
                if low and "max_share" in report.budget else ""
            lines.append(f"sensitivity fallback: {escape(report.budget.removeprefix('none '))}, nothing changed"
                         + more)
            continue
        met = "met" if report.met else "[red]not met[/red]"
        count = len(report.released)
        released = f", {count} op{'s' * (count != 1)} quantized only beside them returned to float too"
        on_runtime_value = report.after_runtime_db if report.after_runtime_drop is None else report.after_runtime_drop
        on_runtime = "" if on_runtime_value is None else \
            f" simulated, {on_runtime_value:.4g} on {escape(report.runtime)}"
        lines.append(f"sensitivity fallback: {escape(report.budget)} {met} ({report.before:.4g} -> "
                     f"{report.after:.4g}{on_runtime}), {len(report.changed)} of {report.candidates} candidate ops "
                     "changed" + (released if report.released else ""))
        for change in report.changed:
            to = change.to if isinstance(change.to, str) else ", ".join(change.to)
            outlier = change.outlier_ratio
            why = f" (input channel outlier {outlier:.3g}x median)" if outlier is not None else ""
            lines.append(f"  {escape(change.op)} -> {escape(to)}{why}")
    return lines
