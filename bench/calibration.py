"""Calibration benchmark: qtool's calibrate() against onnxruntime's calibrators, time and peak memory.

A ResNet-18-shaped CNN with random weights (input 3x64x64) is calibrated on N
random samples, streamed from a directory of .npy files (one batch each) by
both tools:

* qtool: the planning passes (simplify, dispatch, fusion, simplify) with the
  default configuration, then ``calibrate()`` with the minmax, percentile, kl
  or mse observer;
* onnxruntime: what ``quantize_static`` runs to calibrate (``create_calibrator``
  over its default op types, ``collect_data``, ``compute_data``) with
  CalibrationMethod MinMax, Percentile and Entropy.

Each configuration runs in its own subprocess, which reports its calibration
time, its peak resident memory (``ru_maxrss``) and that peak just before
calibrating (imports, model and session set-up), so the growth is what
calibration itself holds. Peaks are read from ``/proc/self/status`` (VmHWM):
``ru_maxrss`` survives exec and would report the parent's peak.

    python bench/calibration.py                          # N = 64, 256, 1024
    python bench/calibration.py --samples 64,128 --methods minmax,kl --json out.json
    python bench/calibration.py --threads 1             # both single-threaded (steadier on a busy machine)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INPUT = "image"
# qtool observer -> the onnxruntime CalibrationMethod doing the same job (None: ORT has none)
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "kl": "Entropy", "mse": None}


def _peak_mib() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would keep the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# -- inside a worker subprocess ------------------------------------------------------------------------
def _batches(data_dir: str):
    for path in sorted(Path(data_dir).glob("*.npy")):
        yield {INPUT: np.load(path)}


def _calibrate_qtool(model: str, data_dir: str, method: str, batch: int, threads: int) -> dict:
    import qtool
    import torch
    from qtool.calibration import calibrate, load_calibration_data
    from qtool.config import resolve_config
    from qtool.passes import PassManager
    from qtool.passes.order import planning_passes

    if threads:
        torch.set_num_threads(threads)
    config = resolve_config({}, {"calibration": {"observer": method}})
    graph = qtool.load(model)
    PassManager(planning_passes(config)).run(graph)
    data = load_calibration_data(data_dir, graph, batch_size=batch)
    before = _peak_mib()
    start = time.perf_counter()
    stats = calibrate(graph, data, progress=False, options=config.calibration)
    return {"seconds": time.perf_counter() - start, "before_mib": before, "tensors": stats["tensors"]}


def _calibrate_ort(model: str, data_dir: str, method: str, batch: int, threads: int) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(data_dir)

        def get_next(self):
            return next(self.batches, None)

    op_types = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))  # quantize_static's default
    before = _peak_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(model, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod[METHODS[method]])
        if threads:  # the calibrator's own session, with the same settings but a thread count
            options = calibrator.infer_session.get_session_options()
            options.intra_op_num_threads = threads
            calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, options,
                                                            providers=calibrator.execution_providers)
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    return {"seconds": time.perf_counter() - start, "before_mib": before, "tensors": len(ranges.data)}


def worker(spec: dict) -> dict:
    run = _calibrate_qtool if spec["tool"] == "qtool" else _calibrate_ort
    result = run(spec["model"], spec["data"], spec["method"], spec["batch"], spec["threads"])
    return {**result, "peak_mib": _peak_mib()}


# -- the parent ------------------------------------------------------------------------------------------
def run_worker(spec: dict, timeout: float) -> dict:
    """One configuration in a fresh process; its JSON result, or an ``error``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_samples(directory: Path, n: int, batch: int, size: int) -> None:
    """``n`` samples in files of ``batch`` samples, as a camera-like positive image would not be: N(0, 1)."""
    rng = np.random.default_rng(n)
    directory.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, batch)):
        count = min(batch, n - start)
        np.save(directory / f"{i:05d}.npy", rng.standard_normal((count, 3, size, size), dtype=np.float32))


def bench(args, workdir: Path, log) -> list[dict]:
    sys.path.insert(0, str(HERE))
    import onnx
    from torch_models import cnn_onnx

    model = workdir / "resnet.onnx"
    onnx.save(cnn_onnx("resnet18", width=args.width, size=args.size), model)
    rows = []
    for n in args.samples:
        data = workdir / f"samples_{n}"
        write_samples(data, n, args.batch, args.size)
        for method in args.methods:
            row = {"samples": n, "method": method}
            for tool in ("qtool", "ort"):
                if tool == "ort" and METHODS[method] is None:
                    continue
                spec = {"tool": tool, "model": str(model), "data": str(data), "method": method, "batch": args.batch,
                        "threads": args.threads}
                row[tool] = run_worker(spec, args.timeout)
                log(f"N={n} {method} {tool}: {row[tool]}")
            rows.append(row)
    return rows


def _cell(result: dict | None, key: str, spec: str) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "[red]error[/red]"
    return format(result[key], spec)


def _ratio(rows_result: dict, key: str) -> str:
    q, o = rows_result.get("qtool"), rows_result.get("ort")
    if not q or not o or "error" in q or "error" in o:
        return "-"
    return f"{o[key] / q[key]:.1f}x"


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="calibration: qtool vs onnxruntime (ResNet-18 shape, random weights)")
    for column in ("N", "method", "tensors q/ort", "qtool s", "ort s", "ort/qtool time", "qtool peak MiB",
                   "ort peak MiB", "qtool +MiB", "ort +MiB"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        q, o = row.get("qtool"), row.get("ort")
        growth = {tool: {"growth": r["peak_mib"] - r["before_mib"]} if r and "error" not in r else r
                  for tool, r in (("qtool", q), ("ort", o))}
        table.add_row(str(row["samples"]), row["method"] + (f" / {METHODS[row['method']]}" if o else ""),
                      f"{_cell(q, 'tensors', 'd')}/{_cell(o, 'tensors', 'd')}",
                      _cell(q, "seconds", ".2f"), _cell(o, "seconds", ".2f"), _ratio(row, "seconds"),
                      _cell(q, "peak_mib", ".0f"), _cell(o, "peak_mib", ".0f"),
                      _cell(growth["qtool"], "growth", ".0f"), _cell(growth["ort"], "growth", ".0f"))
    Console(width=max(Console().width, 140)).print(table)
    print("+MiB: peak resident memory minus the peak before calibration started (imports, model, sessions);"
          " each configuration ran in its own process.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--samples", default="64,256,1024", help="sample counts N (comma-separated)")
    parser.add_argument("--methods", default="minmax,percentile,kl", help=f"of {', '.join(METHODS)}")
    parser.add_argument("--batch", type=int, default=32, help="samples per batch and per .npy file")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of torch and of ORT's calibration session (0: each library's default)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    args.samples = [int(n) for n in args.samples.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench(args, Path(tmp), lambda message: print(message, file=sys.stderr))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
