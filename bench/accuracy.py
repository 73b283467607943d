"""Public accuracy benchmark: qtool against onnxruntime.quantization on real trained models.

For each model in bench/accuracy_models/ it measures the float metric, then quantizes the float ONNX model with

* onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations) with the MinMax, Percentile
  and Entropy calibrators, each on ORT's default op set and on the compute ops only (Conv, ConvTranspose, Gemm,
  MatMul), after ORT's recommended ``quant_pre_process`` (and an opset upgrade to 13 where a model is older:
  per-channel QDQ needs it), calibrating 8 samples at a time (``CalibStridedMinMax``) to bound memory;
* qtool: its default (``qtool.quantize(model, "onnxruntime", calib, output=...)``), an optimized run and W4A8;

and reports each one's metric, its ratio to float and to the best ORT configuration, the quantize wall time, the
peak memory of the process that quantized (each configuration runs in its own subprocess; its ``ru_maxrss`` is
read with ``os.wait4``) and the ORT CPU latency of the exported model against the float model.

    python bench/accuracy.py                          # every model, every configuration
    python bench/accuracy.py --models digits,ocr --quick
    python bench/accuracy.py --configs ort-minmax,qtool-default --json results.json

Install the models' packages first: ``pip install -r bench/requirements.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

import accuracy_models  # noqa: E402
import measure  # noqa: E402

COMPUTE_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
ORT_METHODS = ("MinMax", "Percentile", "Entropy")


@dataclass(frozen=True)
class Config:
    name: str
    kind: str  # "ort" | "qtool"
    method: str = ""
    op_types: tuple[str, ...] | None = None
    qtool_kwargs: dict = field(default_factory=dict, hash=False, compare=False)
    label: str = ""


def _configs() -> list[Config]:
    out = []
    for method in ORT_METHODS:
        out.append(Config(f"ort-{method.lower()}", "ort", method, None, label=f"ORT {method}, default ops"))
        out.append(Config(f"ort-{method.lower()}-compute", "ort", method, tuple(COMPUTE_OPS),
                          label=f"ORT {method}, compute ops"))
    # The qtool runs: qtool.quantize(model, "onnxruntime", calib, output=..., **qtool_kwargs).
    # "optimized" turns on the accuracy passes that `qtool quantize --optimize` turns on.
    out.append(Config("qtool-default", "qtool", label="qtool default"))
    out.append(Config("qtool-optimized", "qtool", label="qtool optimized",
                      qtool_kwargs={"accuracy": {"equalization": True, "adaround": True}}))
    out.append(Config("qtool-w4a8", "qtool", qtool_kwargs={"preset": "w4a8"}, label="qtool W4A8"))
    return out


CONFIGS = {c.name: c for c in _configs()}


@dataclass
class Row:
    model: str
    config: str
    label: str
    metric: float | None = None
    quantize_s: float | None = None
    peak_mib: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    note: str = ""
    metric_name: str = ""
    coverage: list | None = None  # [quantized, total] compute ops, counted in the exported file


# -- the quantizing subprocess ---------------------------------------------------------------------------------


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of feed dicts, with the ``set_range`` that its
    ``CalibStridedMinMax`` option uses to calibrate a few samples at a time."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._samples = samples
        self._it = iter(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._samples[start_index:end_index])


# ORT's calibrators keep every intermediate output of every sample they are given at once (PP-OCRv4 det: ~370 MiB
# a sample); its CalibStridedMinMax option feeds them this many at a time (exact for MinMax; histograms are merged).
ORT_STRIDE = 8


def _quantize_ort(source: Path, output: Path, config: Config, calib: list[dict]) -> str:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    stride = max(d for d in range(1, ORT_STRIDE + 1) if len(calib) % d == 0)
    options = {"CalibStridedMinMax": stride}

    def run() -> None:
        quantize_static(str(source), str(output), _Reader(calib), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(config.op_types) if config.op_types else None, per_channel=True,
                        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, config.method), extra_options=options)

    try:
        run()
    except ValueError as exc:
        # onnxruntime 1.32's per-channel weight-scale adjustment for int32 bias indexes a bias that is not 1-D
        # (Magika's MatMul + Add) and fails; its documented switch skips that adjustment.
        if "truth value of an array" not in str(exc):
            raise
        options["QDQDisableWeightAdjustForInt32Bias"] = True
        run()
        return "QDQDisableWeightAdjustForInt32Bias=True (the default fails in ORT's int32-bias weight-scale adjustment)"
    return ""


def _quantize_qtool(source: Path, output: Path, config: Config, calib: list[dict]) -> str:
    import qtool

    if not hasattr(qtool, "quantize"):
        raise RuntimeError("qtool.quantize not available: module 'qtool' has no attribute 'quantize'")
    qtool.quantize(str(source), "onnxruntime", calib, output=str(output), **config.qtool_kwargs)
    return ""


def _worker(spec: dict) -> dict:
    """Quantize one model with one configuration; the parent reads this process's peak memory."""
    config = CONFIGS[spec["config"]]
    module = accuracy_models.load(spec["model"])
    calib = module.calibration_data(spec["calib"])
    output = Path(spec["output"])
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        if config.kind == "ort":
            note = _quantize_ort(Path(spec["source"]), output, config, calib)
        else:
            note = _quantize_qtool(Path(spec["source"]), output, config, calib)
    except Exception as exc:  # reported as the row's error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"{type(exc).__name__}: {first}"[:300]
        if config.kind == "qtool" and not message.startswith("RuntimeError: qtool.quantize not available"):
            message = f"qtool.quantize failed: {message}"
        return {"error": message, "traceback": traceback.format_exc()}
    seconds = time.perf_counter() - start
    if not output.exists():
        return {"error": f"no model written at {output}"}
    return {"seconds": seconds, "note": note[:2000], "peak_mib": measure.own_peak_mib()}


def _run_worker(spec: dict, timeout: float) -> tuple[dict, float]:
    """Run ``_worker`` in a subprocess; returns its result and its ru_maxrss in MiB (an upper bound: see
    ``measure.own_peak_mib``, which the worker reports itself where /proc is there)."""
    result, _, peak_mib = measure.run_measured([sys.executable, str(Path(__file__).resolve()), "--worker",
                                                json.dumps(spec)], timeout)
    return result, peak_mib


# -- the parent ------------------------------------------------------------------------------------------------


def _pre_process(source: Path, target: Path) -> tuple[Path, str]:
    """What onnxruntime's quantizer needs first, cached: opset >= 13 (per-channel DequantizeLinear has an axis from
    13 on; quantize_static writes invalid models below) and its recommended quant_pre_process (shape inference and
    basic graph optimisation; without symbolic shapes where symbolic inference fails)."""
    notes = []
    source, target = source.resolve(), target.resolve()  # read inside a scratch working directory
    upgraded = target.with_suffix(".opset13.onnx")
    if not target.exists():
        import onnx
        from onnx import version_converter

        model = onnx.load(str(source))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            onnx.save(version_converter.convert_version(model, 13), str(upgraded))
            source = upgraded
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # in a folder of its own: where symbolic inference fails, onnxruntime saves what it inferred in the
        # working directory (sym_shape_infer_temp.onnx and a data file), which the bench then left behind
        with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
            try:
                quant_pre_process(str(source), str(target))
            except Exception as exc:
                try:
                    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
                    target.with_suffix(".note").write_text(f"symbolic shape inference failed ({type(exc).__name__})")
                except Exception as exc2:
                    return source, f"no pre-process ({type(exc2).__name__}: {exc2})"[:200]
    if upgraded.exists():
        notes.append("input upgraded to opset 13")
    if target.with_suffix(".note").exists():
        notes.append("input pre-processed without symbolic shapes: " + target.with_suffix(".note").read_text())
    return target, "; ".join(notes)


def bench_model(name: str, configs: list[Config], args, workdir: Path, log) -> list[Row]:
    module = accuracy_models.load(name)
    model_dir = workdir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    limit = args.eval_limit
    start = time.perf_counter()
    source = module.build(model_dir)
    log(f"[{name}] float model {source} ({time.perf_counter() - start:.1f} s)")
    feed = module.calibration_data(1)[0]
    start = time.perf_counter()
    float_metric = module.evaluate(source, limit=limit)
    log(f"[{name}] float {module.METRIC} = {float_metric:.4f} ({time.perf_counter() - start:.1f} s)")
    rows = [Row(name, "float", "float", float_metric, latency_ms=measure.latency_ms(source, feed, args.runs, args.threads),
                metric_name=module.METRIC)]
    ort_source, pre_note = None, ""
    for config in configs:
        row = Row(name, config.name, config.label, metric_name=module.METRIC)
        if config.kind == "ort" and ort_source is None:
            ort_source, pre_note = _pre_process(source, model_dir / f"{source.stem}.pre.onnx")
            if pre_note:
                log(f"[{name}] {pre_note}")
        spec = {"model": name, "config": config.name, "calib": args.calib,
                "source": str(ort_source if config.kind == "ort" else source),
                "output": str(model_dir / f"{source.stem}.{config.name}.onnx")}
        result, peak = _run_worker(spec, args.timeout)
        row.peak_mib = result.get("peak_mib") or peak
        if "error" in result:
            row.error = result["error"]
            if args.verbose and result.get("traceback"):
                log(result["traceback"])
        else:
            row.quantize_s = result["seconds"]
            row.note = "; ".join(n for n in (pre_note if config.kind == "ort" else "", result.get("note", "")) if n)
            try:
                quantized = Path(spec["output"])
                row.metric = module.evaluate(quantized, limit=limit)
                row.latency_ms = measure.latency_ms(quantized, feed, args.runs, args.threads)
                share = measure.coverage(quantized)
                row.coverage = [share.part, share.whole]
            except Exception as exc:
                row.error = f"evaluation failed: {type(exc).__name__}: {exc}"[:300]
        shown = f"{row.metric:.4f}" if row.metric is not None else f"n/a ({row.error})"
        log(f"[{name}] {config.name}: {shown}" + (f" ({row.quantize_s:.1f} s)" if row.quantize_s else ""))
        rows.append(row)
    return rows


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def coverage_cell(coverage: list | None) -> str:
    """'12/14' compute ops quantized in the exported file; a quantization that left every one float says so."""
    if not coverage:
        return "-"
    quantized, total = coverage
    return f"{quantized}/{total}" + (" FLOAT MODEL" if total and not quantized else "")


def print_table(rows: list[Row], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(150, Console().width))
    notes: list[str] = []
    errors: list[str] = []
    table = Table(title="qtool accuracy benchmark (ORT CPU latency: one sample, fastest run)", show_lines=False)
    for column, justify in (("model", "left"), ("configuration", "left"), ("metric", "right"),
                            ("coverage", "right"), ("vs float", "right"), ("vs best ORT", "right"), ("quantize s", "right"),
                            ("peak MiB", "right"), ("latency ms", "right"), ("lat. vs float", "right")):
        table.add_column(column, justify=justify)
    models = list(dict.fromkeys(r.model for r in rows))
    for index, model in enumerate(models):
        group = [r for r in rows if r.model == model]
        base = next((r for r in group if r.config == "float"), None)
        ort = [r.metric for r in group if r.config.startswith("ort-") and r.metric is not None]
        best_ort = max(ort) if ort else None
        metric_name = next((r.metric_name for r in group if r.metric_name), "") or accuracy_models.load(model).METRIC
        for r in group:
            if r.error and r.metric is None:
                errors.append(f"[{len(errors) + 1}] {model}, {r.label}: n/a ({r.error})")
                table.add_row(model if r.config == "float" else "", r.label, f"n/a [{len(errors)}]", "", "", "", "",
                              _fmt(r.peak_mib, ".0f"), "", "")
                continue
            vs_float = r.metric / base.metric if base and base.metric else None
            vs_ort = r.metric / best_ort if best_ort else None
            lat = r.latency_ms / base.latency_ms if base and base.latency_ms and r.latency_ms else None
            best_mark = " *" if r.config.startswith("ort-") and r.metric == best_ort else ""
            label = r.label + best_mark
            table.add_row(f"{model}\n[dim]{metric_name}[/dim]" if r.config == "float" else "", label,
                          f"{r.metric:.4f}", coverage_cell(r.coverage), _fmt(vs_float, ".4f"),
                          "" if r.config == "float" else _fmt(vs_ort, ".4f"), _fmt(r.quantize_s, ".1f"),
                          _fmt(r.peak_mib, ".0f"), _fmt(r.latency_ms, ".2f"), _fmt(lat, ".2f"))
        ort_rows = [r for r in group if r.config.startswith("ort-")]
        for note in dict.fromkeys(r.note for r in group if r.note):
            having = [r for r in group if r.note == note]
            labels = "every ORT row" if having == ort_rows else ", ".join(r.label for r in having)
            notes.append(f"{model} ({labels}): {note}")
        if index != len(models) - 1:
            table.add_section()
    console.print(table)
    console.print("coverage: compute ops (Conv, ConvTranspose, MatMul, Gemm) of the exported file whose data and weight "
                  "come through DequantizeLinear (or integer ops), of all of them.")
    console.print("* best ORT configuration of the model; ratios are quantized / float and quantized / best ORT; "
                  "peak MiB is the quantizing subprocess's maximum resident set (Python, libraries and the "
                  "calibration data included).")
    for line in notes + errors:
        console.print(line, markup=False, highlight=False)


def markdown_table(rows: list[Row]) -> str:
    """The same table as Markdown, for docs/benchmarks.md."""
    lines = ["| model | configuration | metric | coverage | vs float | vs best ORT | quantize s | peak MiB "
             "| latency ms | lat. vs float |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r.model for r in rows):
        group = [r for r in rows if r.model == model]
        base = next((r for r in group if r.config == "float"), None)
        ort = [r.metric for r in group if r.config.startswith("ort-") and r.metric is not None]
        best_ort = max(ort) if ort else None
        for r in group:
            name = f"**{model}**" if r.config == "float" else ""
            if r.metric is None:
                lines.append(f"| {name} | {r.label} | n/a: {r.error} | | | | | {_fmt(r.peak_mib, '.0f')} | | |")
                continue
            vs_float = r.metric / base.metric if base and base.metric else None
            vs_ort = r.metric / best_ort if best_ort and r.config != "float" else None
            lat = r.latency_ms / base.latency_ms if base and base.latency_ms and r.latency_ms else None
            mark = " *" if r.config.startswith("ort-") and r.metric == best_ort else ""
            lines.append(f"| {name} | {r.label}{mark} | {r.metric:.4f} | {coverage_cell(r.coverage)} | "
                         f"{_fmt(vs_float, '.4f')} | "
                         f"{_fmt(vs_ort, '.4f', '')} | {_fmt(r.quantize_s, '.1f')} | {_fmt(r.peak_mib, '.0f')} | "
                         f"{_fmt(r.latency_ms, '.2f')} | {_fmt(lat, '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(accuracy_models.MODELS),
                        help=f"comma-separated, from: {', '.join(accuracy_models.MODELS)}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--quick", action="store_true",
                        help="16 calibration samples, 100 evaluation samples, 5 latency runs, MinMax ORT only")
    parser.add_argument("--calib", type=int, default=None, help="calibration samples (default 32, quick 16)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on at most this many samples")
    parser.add_argument("--runs", type=int, default=None, help="timed latency runs (default 30, quick 5)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads for evaluation")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to one quantization")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qtool-accuracy",
                        help="where models and quantized models are written (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--table", metavar="FILE,FILE",
                        help="only print the table of rows saved with --json (a later file's row replaces an "
                             "earlier one of the same model and configuration)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed configurations")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        measure.write_result(_worker(json.loads(args.worker)))
        return 0

    if args.table:
        merged: dict[tuple[str, str], Row] = {}
        for path in args.table.split(","):
            for item in json.loads(Path(path).read_text()):
                row = Row(**item)
                merged[(row.model, row.config)] = row
        order = {name: i for i, name in enumerate(["float", *CONFIGS])}
        models = list(dict.fromkeys(model for model, _ in merged))
        rows = sorted(merged.values(), key=lambda r: (models.index(r.model), order.get(r.config, 99)))
        print(markdown_table(rows)) if args.markdown else print_table(rows)
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in models:
        accuracy_models.load(name)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    configs = [CONFIGS[n] for n in names]
    if args.quick:
        configs = [c for c in configs if c.kind != "ort" or c.method == "MinMax"]
        args.calib = args.calib or 16
        args.eval_limit = args.eval_limit or 100
        args.runs = args.runs or 5
    args.calib = args.calib or 32
    args.runs = args.runs or 30

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows: list[Row] = []
    for name in models:
        rows += bench_model(name, configs, args, args.workdir, log)
    print(markdown_table(rows)) if args.markdown else print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
