"""``qtool analyse``: where the quantization error comes from, ranked."""

from __future__ import annotations

import json
import math

from rich.markup import escape
from rich.table import Table

from .calib_args import add_calibration_flags, calibration_options
from .console import console, pass_progress

ANALYSE_SCHEMA_VERSION = 1


def add_parser(sub) -> None:
    p = sub.add_parser("analyse", aliases=["analyze"],
                       help="rank the ops by quantization error (graph-wise) and sensitivity (layer-wise)")
    p.add_argument("model", help="the float ONNX model")
    p.add_argument("--platform", required=True, help="target platform (see list-platforms)")
    p.add_argument("--calib", required=True,
                   help="calibration data (.npz file or folder of .npy/.npz); its first samples drive the analysis")
    add_calibration_flags(p)
    p.add_argument("--config", help="configuration file (TOML, YAML or JSON)")
    p.add_argument("--preset", help="configuration preset")
    p.add_argument("--load-state", help="reuse a state saved by 'qtool quantize --save-state' instead of calibrating")
    p.add_argument("--samples", type=int, default=16, help="samples used for the analysis (default 16)")
    p.add_argument("--top", type=int, default=10, help="rows shown per table (default 10)")
    p.add_argument("--device", default="cpu", help="torch device for the simulation (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print JSON with every op")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..analysis import graphwise_error, layerwise_sensitivity
    from ..calibration import load_calibration_data
    from ..executor import TorchExecutor
    from ..pipeline import quantize

    options = calibration_options(args)
    result = quantize(args.model, args.platform, args.calib, config=args.config, preset=args.preset,
                      device=args.device, load_state=args.load_state, allow_unsupported=True, progress=True,
                      finished=pass_progress(f"analysing {args.model} for {args.platform}"), **options)
    console(stderr=True).print(f"measuring the error of each op on {args.samples} samples")
    batches = load_calibration_data(args.calib, result.graph, layout=options["calib_layout"],
                                    skip_nonfinite=options["skip_nonfinite"]).samples(args.samples)
    executor = TorchExecutor(result.graph, device=args.device)
    graphwise = graphwise_error(executor, batches)
    layerwise = layerwise_sensitivity(executor, batches)
    if args.json:
        print(json.dumps({"schema_version": ANALYSE_SCHEMA_VERSION, "graphwise": [r.as_dict() for r in graphwise],
                          "layerwise": [r.as_dict() for r in layerwise]}, indent=2))
        return 0
    out = console()
    out.print(_table("Graph-wise error (quantized run vs float, accumulated up to each op)", graphwise, args.top))
    out.print(_table("Layer-wise sensitivity (only this op quantized, error at the outputs)", layerwise, args.top))
    return 0


def _table(title: str, rows, top: int) -> Table:
    table = Table(title=title)
    for column in ("rank", "op", "type", "SNR (dB)", "cosine", "MSE"):
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(rows[:top], 1):
        snr = "exact" if math.isinf(row.snr_db) and row.snr_db > 0 else f"{row.snr_db:.1f}"
        table.add_row(str(rank), escape(row.op), row.op_type, snr, f"{row.cosine:.5f}", f"{row.mse:.3g}")
    return table
