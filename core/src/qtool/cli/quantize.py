"""``qtool quantize``: the whole pipeline from the command line, with a pass-by-pass progress display."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ..errors import QtoolError
from ..passes.accuracy.fallback import FallbackReport
from ..pipeline import quantize
from ..platform import Severity
from .explain import explain_document, print_explanation
from .metric_file import load_metric

SEVERITY_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.PERFORMANCE: "cyan"}


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model for a platform from calibration data")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--platform", required=True, help="target platform (see list-platforms)")
    p.add_argument("--calib", help="calibration data: .npz file or directory of .npy/.npz "
                   "(required unless --load-state)")
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
    p.add_argument("--explain", action="store_true", help="print how each op was quantized")
    p.add_argument("--optimize", action="store_true",
                   help="turn on the accuracy passes equalization and adaround")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--min-snr", type=float, metavar="DB",
                        help="return the most sensitive ops to float until the output SNR is at least DB")
    budget.add_argument("--metric", metavar="FILE.py:FUNCTION",
                        help="your accuracy metric, FUNCTION(executor) -> float; with --max-drop")
    p.add_argument("--max-drop", type=float, metavar="X",
                   help="return the most sensitive ops to float until --metric is at most X below float")
    p.set_defaults(handler=run, remove_activations=None)


def accuracy_flags(args) -> dict:
    """The [accuracy] passes that --optimize, --min-snr and --metric with --max-drop turn on."""
    enabled: dict = {}
    if args.optimize:
        enabled.update(equalization=True, adaround=True)  # bias_correction lowered PP-OCRv4 rec accuracy
    if args.min_snr is not None:
        enabled["fallback"] = {"min_snr_db": args.min_snr}
    if (args.metric is None) != (args.max_drop is None):
        raise QtoolError("--metric and --max-drop go together: the budget is the metric's drop from float")
    if args.metric is not None:
        enabled["fallback"] = {"metric": load_metric(args.metric), "max_drop": args.max_drop}
    return enabled


def export_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as a dict; ``true``/``false`` become booleans, other values stay strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise QtoolError(f"--export-option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    return options


def run(args) -> int:
    out, progress = Console(), Console(stderr=True)

    def finished(step) -> None:
        mark = "[green]\u2713[/green]" if step.modified else "[dim]-[/dim]"
        progress.print(f"  {mark} {step.name:<26} {step.seconds:8.3f} s")

    progress.print(f"quantizing {escape(args.model)} for {escape(args.platform)}")
    result = quantize(args.model, args.platform, args.calib, config=args.config, preset=args.preset,
                      output=args.output, device=args.device, allow_unsupported=args.allow_unsupported,
                      opset=args.opset, remove_activations=args.remove_activations, save_state=args.save_state,
                      load_state=args.load_state, accuracy=accuracy_flags(args),
                      export_options=export_options(args.export_options), progress=True,
                      finished=finished)
    if args.explain:
        print_explanation(explain_document(result.graph, result.summary["platform"], result.config), out,
                          result.config)
    print_summary(result, out, allowed=args.allow_unsupported)
    return 0


def print_summary(result, console: Console, *, allowed: bool = False) -> None:
    """Ops quantized / kept float, diagnostics by severity, time, agreement and files."""
    summary = result.summary
    ops = summary["ops"]
    console.print(f"[bold]{ops['quantized']}[/bold] of {ops['total']} ops quantized, {ops['float']} kept float")
    for reason, count in ops["float_reasons"].items():
        console.print(f"  {count:>4} x {escape(reason)}")
    for line in fallback_lines(result.pass_runs):
        console.print(line)
    for severity in Severity:
        found = [d for d in result.diagnostics if d.severity is severity]
        if not found:
            continue
        label = "errors, exported anyway as allowed" if severity is Severity.ERROR and allowed else severity.value
        style = "yellow" if severity is Severity.ERROR and allowed else SEVERITY_STYLE[severity]
        console.print(f"[{style}]{len(found)} {label}[/{style}]")
        for diagnostic in found:
            console.print(f"  {escape(str(diagnostic))}")
    total = sum(p["seconds"] for p in summary["passes"])
    console.print(f"passes: {len(summary['passes'])} in {total:.2f} s")
    if summary["agreement"]:
        facts = ", ".join(f"{k} {v}" for k, v in summary["agreement"].items() if not isinstance(v, dict | list))
        console.print(f"agreement: {escape(facts)}")
    for path in summary["files"]:
        console.print(f"wrote {escape(path)}")
    if summary["state"]:
        console.print(f"state saved to {escape(summary['state'])}")


def fallback_lines(runs) -> list[str]:
    """What the sensitivity fallback did: its budget, the score before and after, and each op it changed."""
    lines = []
    for report in (r.report for r in runs if isinstance(r.report, FallbackReport)):
        if not report.candidates:
            lines.append("sensitivity fallback: no candidate op, nothing changed")
            continue
        met = "met" if report.met else "[red]not met[/red]"
        lines.append(f"sensitivity fallback: {escape(report.budget)} {met} ({report.before:.4g} -> "
                     f"{report.after:.4g}), {len(report.changed)} of {report.candidates} candidate ops changed")
        for change in report.changed:
            to = change.to if isinstance(change.to, str) else ", ".join(change.to)
            outlier = change.outlier_ratio
            why = f" (input channel outlier {outlier:.3g}x median)" if outlier is not None else ""
            lines.append(f"  {escape(change.op)} -> {escape(to)}{why}")
    return lines
