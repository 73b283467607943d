"""Speed benchmark: how long quantizing takes, how much memory it needs, and how fast the exports run.

For each model, in one run on the same calibration data and the same thread count:

* quantize wall time and peak memory of qtool's default, ``minmax`` (the ``minmax`` observer) and ``--optimize``,
  and of onnxruntime's ``quantize_static`` MinMax / Percentile / Entropy on the compute ops (as bench/accuracy.py
  runs it: QDQ, per-channel int8 weights, uint8 activations, after ``quant_pre_process``, whose time is not
  counted), each in its own subprocess, printed as ratios to ORT MinMax;
* qtool's time per pass (and the rest: import, loading, export and the agreement check);
* the ORT CPU latency of the float model, of each ORT export and of each qtool export at 1 and 2 intra-op threads
  (fastest of N runs, the models taking turns run by run), wall and CPU time, as ratios to float;
* on every row, how many compute ops (Conv, ConvTranspose, Gemm, MatMul) run quantized, counted in the exported file.

    python bench/speed.py                          # every model of bench/accuracy.py
    python bench/speed.py --models digits,filetype --runs 10 --markdown

:func:`bench` takes any list of :class:`SpeedModel`, so other model sets (a zoo) can be added.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import measure  # noqa: E402
from accuracy import CONFIGS, _pre_process, _quantize_ort  # noqa: E402

QTOOL_CONFIGS = {
    "qtool-default": {},
    "qtool-minmax": {"config": {"calibration": {"observer": "minmax"}}},
    "qtool-optimize": {"accuracy": {"equalization": True, "adaround": True}},
}
ORT_CONFIGS = ("ort-minmax-compute", "ort-percentile-compute", "ort-entropy-compute")
BASELINE = "ort-minmax-compute"


@dataclass
class SpeedModel:
    """A float ONNX model, its calibration samples (one feed dict each) and one feed for latency."""

    name: str
    path: Path
    calib: list[dict[str, np.ndarray]]
    feed: dict[str, np.ndarray]


@dataclass
class Row:
    model: str
    config: str
    quantize_s: float | None = None
    peak_mib: float | None = None
    passes: dict[str, float] = field(default_factory=dict)
    quantized_ops: int | None = None
    compute_ops: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # "wall1", "cpu1", "wall2", "cpu2"
    error: str | None = None


# -- the quantizing subprocess ---------------------------------------------------------------------------------


def _worker(spec: dict) -> dict:
    start = time.perf_counter()
    with open(spec["calib"], "rb") as f:
        calib = pickle.load(f)
    output = Path(spec["output"])
    output.unlink(missing_ok=True)
    passes: dict[str, float] = {}
    if spec["config"] in QTOOL_CONFIGS:  # threads: QTOOL_NUM_THREADS and OMP_NUM_THREADS (no torch on this path)
        import qtool

        result = qtool.quantize(spec["source"], "onnxruntime", calib, output=str(output),
                                **QTOOL_CONFIGS[spec["config"]])
        seconds = time.perf_counter() - start
        for run in result.pass_runs:
            passes[run.name] = passes.get(run.name, 0.0) + run.seconds
        passes["other (imports, loading, export, agreement)"] = seconds - sum(passes.values())
    else:
        _quantize_ort(Path(spec["source"]), output, CONFIGS[spec["config"]], calib)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "passes": passes, "peak_mib": measure.own_peak_mib()}


def _run_worker(spec: dict, timeout: float) -> dict:
    """``_worker`` in a fresh interpreter; the whole process is timed (imports included), its peak memory read from
    its own VmHWM (or its ru_maxrss where /proc is missing)."""
    threads = str(spec["threads"])
    result, wall, peak_mib = measure.run_measured(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)], timeout,
        env={"OMP_NUM_THREADS": threads, "QTOOL_NUM_THREADS": threads})
    if "error" not in result:
        result["wall"], result["peak_mib"] = wall, result.get("peak_mib") or peak_mib
    return result


def _compute_ops(path: Path) -> tuple[int, int]:
    """(quantized, all) compute ops of an ONNX file, counted as the zoo counts them (``measure.coverage``)."""
    share = measure.coverage(path)
    return share.part, share.whole


# -- one model ---------------------------------------------------------------------------------------------------


def bench(models: list[SpeedModel], configs: list[str], *, threads: int, runs: int, workdir: Path,
          timeout: float = 1800.0, log=print) -> list[Row]:
    """Quantize every model with every configuration, then time the float model and every export."""
    rows: list[Row] = []
    for model in models:
        rows += _bench_model(model, configs, threads, runs, workdir / model.name, timeout, log)
    return rows


def _bench_model(model: SpeedModel, configs: list[str], threads: int, runs: int, workdir: Path, timeout: float,
                 log) -> list[Row]:
    workdir.mkdir(parents=True, exist_ok=True)
    calib_file = workdir / "calib.pkl"
    with open(calib_file, "wb") as f:
        pickle.dump(model.calib, f)
    ort_source = None
    rows = [Row(model.name, "float")]
    rows[0].quantized_ops, rows[0].compute_ops = _compute_ops(model.path)
    exports = {"float": model.path}
    for config in configs:
        row = Row(model.name, config)
        source = model.path
        if config not in QTOOL_CONFIGS:
            if ort_source is None:
                ort_source, _ = _pre_process(model.path, workdir / f"{model.path.stem}.pre.onnx")
            source = ort_source
        output = workdir / f"{model.path.stem}.{config}.onnx"
        spec = {"config": config, "source": str(source), "output": str(output), "calib": str(calib_file),
                "threads": threads}
        result = _run_worker(spec, timeout)
        if "error" in result:
            row.error = result["error"]
        else:
            row.quantize_s, row.peak_mib, row.passes = result["wall"], result["peak_mib"], result["passes"]
            row.quantized_ops, row.compute_ops = _compute_ops(output)
            exports[config] = output
        log(f"[{model.name}] {config}: " + (row.error or f"{row.quantize_s:.1f} s, {row.peak_mib:.0f} MiB"))
        rows.append(row)
    by_config = {r.config: r for r in rows}
    for count in (1, 2):
        for name, (wall, cpu) in measure.latencies(exports, model.feed, runs, count).items():
            by_config[name].latency_ms.update({f"wall{count}": wall, f"cpu{count}": cpu})
    return rows


# -- the models of bench/accuracy.py -------------------------------------------------------------------------------


def accuracy_models(names: list[str], calib: int, workdir: Path) -> list[SpeedModel]:
    """The models of bench/accuracy.py with ``calib`` calibration samples each."""
    import accuracy_models as source

    models = []
    for name in names:
        module = source.load(name)
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        path = module.build(folder)
        models.append(SpeedModel(name, path, module.calibration_data(calib), module.calibration_data(1)[0]))
    return models


# -- printing ----------------------------------------------------------------------------------------------------


def _ratio(value, base) -> str:
    return f"{value / base:.2f}" if value is not None and base else "-"


def markdown(rows: list[Row]) -> str:
    lines = ["| model | configuration | quantize s | vs ORT MinMax | peak MiB | vs ORT MinMax | quantized ops "
             "| 1 thread ms | vs float | CPU vs float | 2 threads ms | vs float | CPU vs float |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r.model for r in rows):
        group = {r.config: r for r in rows if r.model == model}
        base, flt = group.get(BASELINE), group["float"]
        for row in group.values():
            name = f"**{model}**" if row.config == "float" else ""
            if row.error:
                lines.append(f"| {name} | {row.config} | n/a: {row.error} |" + " |" * 10)
                continue
            lat = row.latency_ms
            cells = [f"{row.quantize_s:.1f}" if row.quantize_s else "",
                     _ratio(row.quantize_s, base and base.quantize_s),
                     f"{row.peak_mib:.0f}" if row.peak_mib else "", _ratio(row.peak_mib, base and base.peak_mib),
                     f"{row.quantized_ops}/{row.compute_ops}"]
            for t in (1, 2):
                cells += [f"{lat.get(f'wall{t}', 0):.2f}", _ratio(lat.get(f"wall{t}"), flt.latency_ms.get(f"wall{t}")),
                          _ratio(lat.get(f"cpu{t}"), flt.latency_ms.get(f"cpu{t}"))]
            if row.config == "float":
                cells[:4] = ["", "", "", ""]
            lines.append(f"| {name} | {row.config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pass_breakdown(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        if row.passes:
            shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(row.passes.items(), key=lambda kv: -kv[1])
                              if v >= 0.05)
            lines.append(f"- {row.model} {row.config} ({row.quantize_s:.1f} s): {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import accuracy_models as source

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(source.MODELS), help=f"from: {', '.join(source.MODELS)}")
    parser.add_argument("--configs", default=",".join([*ORT_CONFIGS, *QTOOL_CONFIGS]),
                        help=f"from: {', '.join([*ORT_CONFIGS, *QTOOL_CONFIGS])} ({BASELINE} is always run)")
    parser.add_argument("--calib", type=int, default=32, help="calibration samples per model (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every quantizing process (default 2)")
    parser.add_argument("--runs", type=int, default=30, help="timed latency runs per model and thread count")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to one quantization")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qtool-accuracy")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        measure.write_result(_worker(json.loads(args.worker)))
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in (*ORT_CONFIGS, *QTOOL_CONFIGS)]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}")
    configs = list(dict.fromkeys([BASELINE, *configs]))
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = accuracy_models(names, args.calib, args.workdir)
    measure.byte_compile_qtool()
    rows = bench(models, configs, threads=args.threads, runs=args.runs, workdir=args.workdir / "speed",
                 timeout=args.timeout, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"threads {args.threads}, {args.calib} calibration samples, latency: fastest of {args.runs} runs, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print(markdown(rows))
    print("\nqtool per pass (s):\n" + pass_breakdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
