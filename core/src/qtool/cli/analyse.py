"""``qtool analyse``: where the quantization error comes from, ranked."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from ..errors import QtoolError
from ..files import check_outputs
from .calib_args import add_calibration_flags, calibration_options
from .console import console, pass_progress

ANALYSE_SCHEMA_VERSION = 2  # 2: non-finite SQNR, cosine, MSE as "Infinity", "-Infinity", "NaN" (not null)


def add_parser(sub) -> None:
    p = sub.add_parser("analyse", aliases=["analyze"],
                       help="rank the ops by quantization error (graph-wise) and sensitivity (layer-wise)")
    p.add_argument("model", help="the float ONNX model")
    p.add_argument("--platform", required=True, help="target platform (see list-platforms)")
    p.add_argument("--calib", required=True,
                   help="calibration data (.npz file, folder of .npy/.npz, or ONNX test_data_set_* folders); its first "
                        "samples drive the analysis")
    add_calibration_flags(p)
    p.add_argument("--config", help="configuration file (TOML, YAML or JSON)")
    p.add_argument("--preset", help="configuration preset")
    p.add_argument("--load-state", help="reuse a state saved by 'qtool quantize --save-state' instead of calibrating")
    p.add_argument("--samples", type=int, default=16, help="samples used for the analysis (default 16)")
    p.add_argument("--top", type=int, default=10, help="rows shown per table (default 10)")
    p.add_argument("--device", default="cpu", help="torch device for the simulation (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print JSON with every op")
    p.add_argument("--html", metavar="FILE", help="also write the self-contained HTML report (charts, histograms, "
                   "dispatch table) to FILE; needs the 'report' extra")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..report import analyse, require_bundle

    if args.top < 1:
        raise QtoolError(f"--top: rows shown per table, at least 1, got {args.top}")
    if args.html is not None:
        check_outputs({"report": [args.html]}, inputs=(args.model, args.calib, args.config, args.load_state))
        require_bundle()
    report = analyse(args.model, args.platform, args.calib, config=args.config, preset=args.preset,
                     load_state=args.load_state, samples=args.samples, device=args.device,
                     agreement=args.html is not None,
                     finished=pass_progress(f"analysing {args.model} for {args.platform}"),
                     announce=console(stderr=True).print, **calibration_options(args))
    if args.html:
        report.to_html(args.html)
    _print_warnings(report.document["diagnostics"]["items"])
    graphwise, layerwise = _worst_first(report.graphwise), _worst_first(report.layerwise)
    if args.json:
        print(json.dumps({"schema_version": ANALYSE_SCHEMA_VERSION, "graphwise": graphwise, "layerwise": layerwise,
                          "layerwise_unmeasured": report.layerwise_unmeasured}, indent=2))
        return 0
    out = console()
    if args.html:
        out.print(f"wrote {escape(args.html)}")
    if not graphwise:
        out.print(f"nothing to rank: {escape(_why_none_quantized(report.document['coverage']))}")
        return 0
    out.print(_table("Graph-wise error (quantized run vs float, accumulated up to each op)", graphwise, args.top))
    if report.layerwise_unmeasured:
        out.print(escape(report.layerwise_unmeasured))
    else:
        out.print(_table("Layer-wise sensitivity (only this op quantized, error at the outputs)", layerwise, args.top))
    return 0


def _print_warnings(diagnostics: list[dict]) -> None:
    """The run's warnings on stderr, as quantize prints them (skipped samples, nothing quantized...)."""
    from ..platform import Diagnostic, Severity

    err = console(stderr=True)
    for item in diagnostics:
        if item["severity"] == Severity.WARNING.value:
            err.print(escape(str(Diagnostic(Severity.WARNING, **{k: v for k, v in item.items() if k != "severity"}))))


def _why_none_quantized(coverage: dict) -> str:
    """Why no op is quantized: the reasons its ops stay float, with their counts."""
    reasons = "; ".join(f"{count} x {reason}" for reason, count in coverage["float_reasons"].items())
    return f"no op of the model is quantized ({coverage['total']} ops kept float: {reasons or 'no op'})"


def _worst_first(rows: list[dict]) -> list[dict]:
    """The report's rows (topological order, with their index) ranked worst first (an infinite error first, exact
    ones last)."""
    ranked = sorted(rows, key=lambda r: float(r["snr_db"]))
    return [{k: v for k, v in r.items() if k != "index"} for r in ranked]


def _table(title: str, rows: list[dict], top: int) -> Table:
    from ..analysis import snr_text

    table = Table(title=title)
    for column in ("rank", "op", "type", "SNR (dB)", "cosine", "MSE"):
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(rows[:top], 1):
        table.add_row(str(rank), escape(row["op"]), row["op_type"], snr_text(row["snr_db"], 1),
                      f"{float(row['cosine']):.5f}", f"{float(row['mse']):.3g}")
    return table
