"""The model zoo's report card: every zoo model (bench/zoo_models.py) quantized with qtool's defaults for the
onnxruntime platform, next to onnxruntime.quantization's quantize_static (MinMax, compute ops) on the same model
and the same calibration feeds, in the same run.

For each model: does qtool quantize it, does ORT load and run the export; compute-op coverage counted from
each exported file, qtool's and ORT's (Conv/ConvTranspose/MatMul/Gemm whose data and weight come through
DequantizeLinear, or integer ops; its goal counts the ops a documented platform rule keeps float apart, e.g.
ConvTranspose on ONNX Runtime's CPU, each with the reason ``qtool explain`` gives); the share of compute kernels
ORT really runs as integer kernels (its optimized graph); output SQNR against float on held-out feeds (qtool's
export and ORT's; "float model" where an export quantized no compute op); quantize wall time of each
quantizer's whole process and its peak RSS (each runs in its own subprocess); the exported models' latency
against float (1 thread, fastest run, the float model and both exports taking turns run by run so that other
load hits them alike).

    python bench/zoo.py                       # every model; prints the table
    python bench/zoo.py --models resnet18-w8,lstm-state --markdown
    python bench/zoo.py --json zoo.json       # rows as JSON too

Calibration data are feeds (one model call each, ``calib_layout="feeds"``), the form an ORT
CalibrationDataReader gives; the ORT side reads the same files through such a reader.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

import measure  # noqa: E402
from accuracy import _pre_process as pre_process  # noqa: E402  (opset >= 13 and ORT's quant_pre_process)

CALIB, EVAL = 16, 4
COMPUTE_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
GOALS = {"coverage": 0.95, "sqnr_median_db": 20.0, "time_ratio": 1.0}


@dataclass
class Row:
    model: str
    pattern: str
    quantized: bool = False
    runs_in_ort: bool = False
    coverage: list | None = None  # [quantized, total] compute ops of the export
    ort_coverage: list | None = None  # the same of ORT's export
    platform_kept: dict = field(default_factory=dict)  # float compute op of the export -> the platform rule's reason
    integer_kernels: list | None = None  # [integer, total] compute kernels ORT runs
    sqnr_db: float | None = None
    ort_sqnr_db: float | None = None
    qtool_s: float | None = None
    ort_s: float | None = None
    qtool_mib: float | None = None
    ort_mib: float | None = None
    float_ms: float | None = None
    qtool_ms: float | None = None
    ort_ms: float | None = None
    errors: dict = field(default_factory=dict)

    def goals(self) -> list[str]:
        """The goals this row misses (an empty list: all met)."""
        missed = []
        if not (self.quantized and self.runs_in_ort):
            missed.append("quantize+run")
        if not self.coverage_met():
            missed.append("coverage")
        if self.qtool_s is None or self.ort_s is None or self.qtool_s > GOALS["time_ratio"] * self.ort_s:
            missed.append("time")
        if self.qtool_mib is None or self.ort_mib is None or self.qtool_mib > self.ort_mib:
            missed.append("memory")
        if self.qtool_ms is None or self.float_ms is None or self.qtool_ms > self.float_ms:
            missed.append("latency")
        return missed

    def coverage_met(self) -> bool:
        """Coverage >= the goal among the compute ops no documented platform rule keeps float (issue 11)."""
        if not self.coverage or not self.coverage[1]:
            return False
        counted = self.coverage[1] - len(self.platform_kept)
        return counted == 0 or self.coverage[0] >= GOALS["coverage"] * counted


# -- the quantizing subprocesses ----------------------------------------------------------------------------------
def _feeds(folder: Path) -> list[dict[str, np.ndarray]]:
    found = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as data:
            found.append({k: data[k] for k in data.files})
    return found


def _worker(spec: dict) -> dict:
    start = time.perf_counter()
    if spec["tool"] == "qtool":
        import qtool

        result = qtool.quantize(spec["model"], "onnxruntime", spec["calib"], calib_layout="feeds",
                                output=spec["output"])
        return {"seconds": time.perf_counter() - start, "peak_mib": measure.own_peak_mib(),
                "platform_kept": _platform_kept(result.graph)}
    else:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self, feeds):
                self.feeds = iter(feeds)

            def get_next(self):
                return next(self.feeds, None)

        quantize_static(spec["model"], spec["output"], Reader(_feeds(Path(spec["calib"]))),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=COMPUTE_OPS, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"seconds": time.perf_counter() - start, "peak_mib": measure.own_peak_mib()}


def _platform_kept(graph) -> dict[str, str]:
    """Compute ops the onnxruntime platform's own annotate rule keeps float, with the reason explain gives."""
    from qtool.ops import is_compute

    rule = "kept float by onnxruntime:"
    return {op.name: op.quant.reason for op in graph.operations.values()
            if is_compute(op) and op.quant is not None and (op.quant.reason or "").startswith(rule)}


def _quantize(tool: str, model: Path, calib: Path, output: Path, timeout: float) -> tuple[dict, float, float]:
    spec = json.dumps({"tool": tool, "model": str(model), "calib": str(calib), "output": str(output)})
    result, seconds, peak = measure.run_measured([sys.executable, str(Path(__file__).resolve()), "--worker", spec],
                                                 timeout)
    if "error" not in result and not output.exists():
        result = {"error": f"no model written at {output}"}
    return result, seconds, result.get("peak_mib") or peak


# -- one model -------------------------------------------------------------------------------------------------
def _outputs(path: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
    sess = measure.session(path, 1)
    names = [o.name for o in sess.get_outputs()]
    return [[np.asarray(v) for v in sess.run(names, feed)] for feed in feeds]


def _sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    flat_ref = [a for outs in reference for a in outs if np.issubdtype(a.dtype, np.floating)]
    flat_got = [a for outs in got for a in outs if np.issubdtype(a.dtype, np.floating)]
    return measure.sqnr_db(flat_ref, flat_got)


def bench_model(entry, workdir: Path, args, log) -> Row:
    row = Row(entry.name, entry.pattern)
    folder = workdir / entry.name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        source, feed = entry.build(folder)
        calib = folder / "calib"
        calib.mkdir(exist_ok=True)
        for i in range(CALIB):
            np.savez(calib / f"{i:03d}.npz", **feed(i))
        held_out = [feed(CALIB + i) for i in range(EVAL)]
        reference = _outputs(source, held_out)
    except Exception as exc:
        row.errors["build"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log(f"[{entry.name}] build failed: {row.errors['build']}")
        if args.verbose:
            log(traceback.format_exc())
        return row
    exports, qtool_result = {}, {}
    models = {"qtool": source, "ort": pre_process(source, folder / "pre.onnx")[0]}
    timed = {tool: [] for tool in models}
    for _ in range(args.quantize_runs):  # the tools take turns; the fastest run of each is kept
        for tool, model in models.items():
            output = folder / f"{tool}.onnx"
            output.unlink(missing_ok=True)
            timed[tool].append(_quantize(tool, model, calib, output, args.timeout))
    for tool in models:
        output = folder / f"{tool}.onnx"
        result, seconds, peak = min(timed[tool], key=lambda run: ("error" in run[0], run[1]))
        if tool == "qtool":
            qtool_result = result
        setattr(row, f"{tool}_mib", peak)
        if "error" in result:
            row.errors[tool] = result["error"]
            continue
        setattr(row, f"{tool}_s", seconds)
        try:
            got = _outputs(output, held_out)
            setattr(row, "sqnr_db" if tool == "qtool" else "ort_sqnr_db", _sqnr(reference, got))
            exports[tool] = output
            share = measure.coverage(output)
            setattr(row, "coverage" if tool == "qtool" else "ort_coverage", [share.part, share.whole])
        except Exception as exc:
            row.errors[f"{tool} run"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"[:300]
    fastest = measure.latencies({"float": source, **exports}, held_out[0], args.runs, 1)
    row.float_ms, row.qtool_ms, row.ort_ms = (fastest[k][0] if k in fastest else None
                                              for k in ("float", "qtool", "ort"))
    row.quantized = "qtool" not in row.errors
    row.runs_in_ort = "qtool" in exports
    if row.runs_in_ort:
        share = measure.coverage(exports["qtool"])
        platform = qtool_result.get("platform_kept", {})
        row.platform_kept = {name: platform[name] for name in share.float_ops if name in platform}
        try:
            kernels = measure.ort_integer_share(exports["qtool"])
            row.integer_kernels = [kernels.part, kernels.whole]
        except Exception as exc:
            row.errors["ort optimize"] = f"{type(exc).__name__}: {exc}"[:200]
    log(f"[{entry.name}] " + ", ".join(f"{k} {v}" for k, v in _cells(row).items()))
    return row


# -- the table ------------------------------------------------------------------------------------------------------
def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _share(pair) -> str:
    return "-" if not pair else f"{pair[0]}/{pair[1]}" + (f" ({100 * pair[0] / pair[1]:.0f}%)" if pair[1] else "")


def _coverage(row: Row) -> str:
    kept = len(row.platform_kept)
    ort = f"{row.ort_coverage[0]}/{row.ort_coverage[1]}" if row.ort_coverage else "-"
    return _share(row.coverage) + (f", {kept} kept by platform rule" if kept else "") + f" / {ort}"


def _is_float(coverage: list | None) -> bool:
    """The export quantized no compute op: its SQNR says nothing about quantization."""
    return bool(coverage) and coverage[0] == 0


def _sqnr_cell(sqnr_db: float | None, coverage: list | None) -> str:
    return "float model" if _is_float(coverage) else _fmt(sqnr_db, ".1f")


def _cells(row: Row) -> dict[str, str]:
    ratio = row.qtool_s / row.ort_s if row.qtool_s and row.ort_s else None
    latency = row.qtool_ms / row.float_ms if row.qtool_ms and row.float_ms else None
    return {
        "quantize": "yes" if row.quantized else "FAILED",
        "runs in ORT": "yes" if row.runs_in_ort else "no",
        "coverage qtool / ORT": _coverage(row),
        "ORT int kernels": _share(row.integer_kernels),
        "SQNR dB qtool / ORT": f"{_sqnr_cell(row.sqnr_db, row.coverage)} / "
                               f"{_sqnr_cell(row.ort_sqnr_db, row.ort_coverage)}",
        "quantize s qtool / ORT": f"{_fmt(row.qtool_s, '.2f')} / {_fmt(row.ort_s, '.2f')} ({_fmt(ratio, '.2f')}x)",
        "peak MiB qtool / ORT": f"{_fmt(row.qtool_mib, '.0f')} / {_fmt(row.ort_mib, '.0f')}",
        "latency ms float / qtool / ORT": f"{_fmt(row.float_ms, '.2f')} / {_fmt(row.qtool_ms, '.2f')} "
                                          f"({_fmt(latency, '.2f')}x) / {_fmt(row.ort_ms, '.2f')}",
        "goals missed": ", ".join(row.goals()) or "none",
    }


def markdown(rows: list[Row]) -> str:
    header = ["model", *_cells(rows[0]).keys()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(f"| {row.model} | " + " | ".join(_cells(row).values()) + " |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> list[str]:
    """The goals over the whole zoo, and each failure with its message."""
    sqnrs = [r.sqnr_db for r in rows if r.sqnr_db is not None and not _is_float(r.coverage)]
    goals = ("quantize+run", "coverage", "time", "memory", "latency")
    met = {goal: sum(goal not in r.goals() for r in rows) for goal in goals}
    lines = [f"{len(rows)} models; goals met: quantize and run in ORT {met['quantize+run']}/{len(rows)}, "
             f"coverage >= {GOALS['coverage']:.0%} {met['coverage']}/{len(rows)}, quantize time <= ORT "
             f"{met['time']}/{len(rows)}, peak memory <= ORT {met['memory']}/{len(rows)}, latency <= float "
             f"{met['latency']}/{len(rows)}; median SQNR "
             f"{statistics.median(sqnrs):.1f} dB over the {len(sqnrs)} models quantized at all "
             f"(goal >= {GOALS['sqnr_median_db']:.0f} dB)"
             if sqnrs else f"{len(rows)} models; no SQNR measured"]
    for row in rows:
        for where, message in row.errors.items():
            lines.append(f"- {row.model}, {where}: {message}")
        for op, reason in row.platform_kept.items():
            lines.append(f"- {row.model}, {op} {reason}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated names, run in this order (default: every zoo model)")
    parser.add_argument("--runs", type=int, default=20, help="timed latency runs per model (fastest is kept)")
    parser.add_argument("--quantize-runs", type=int, default=1,
                        help="whole quantizing processes per tool, qtool and ORT taking turns (fastest is kept)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed to one quantization")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qtool-zoo")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file (after each model)")
    parser.add_argument("--table", metavar="FILE,FILE",
                        help="only print the table of rows saved with --json (a later file's row of a model wins)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed builds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            measure.write_result(_worker(json.loads(args.worker)))
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            measure.write_result({"error": f"{type(exc).__name__}: {text}"[:300]})
        return 0
    if args.table:  # a later file's row of a model replaces an earlier one (a rerun), in the first one's place
        merged: dict[str, Row] = {}
        for path in args.table.split(","):
            merged.update({item["model"]: Row(**item) for item in json.loads(Path(path).read_text())})
        rows = list(merged.values())
    else:
        import zoo_models

        # ORT's pre-processing writes external-data files into the working directory: keep them in the workdir
        args.workdir = args.workdir.resolve()
        args.json = args.json.resolve() if args.json else None
        args.workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(args.workdir)
        entries = zoo_models.entries()
        if args.models:
            wanted = [m.strip() for m in args.models.split(",")]
            unknown = sorted(set(wanted) - {e.name for e in entries})
            if unknown:
                parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(e.name for e in entries)}")
            by_name = {e.name: e for e in entries}
            entries = [by_name[name] for name in dict.fromkeys(wanted)]  # in the order asked
        measure.byte_compile_qtool()
        print(f"# {measure.machine()}; ORT latency with 1 intra-op thread; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", file=sys.stderr)
        rows = []
        for entry in entries:
            rows.append(bench_model(entry, args.workdir, args, lambda m: print(m, file=sys.stderr, flush=True)))
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(markdown(rows))
    print()
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
