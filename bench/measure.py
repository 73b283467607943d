"""Measurements the benchmarks share, all taken from files and processes, never from qtool's own claims.

* :func:`coverage`: which compute ops (Conv, ConvTranspose, MatMul, Gemm) of an exported ONNX file read their data
  and weight through DequantizeLinear, or are integer ops already;
* :func:`ort_integer_share`: which compute kernels ONNX Runtime really runs as integer kernels, from the graph it
  optimizes (``SessionOptions.optimized_model_filepath``);
* :func:`latency_ms`: the fastest of N runs in ONNX Runtime at a thread count; :func:`latencies`: the same for
  several models taking turns run by run (wall and CPU time), so that other load hits them alike;
* :func:`sqnr_db`: signal-to-quantization-noise ratio of outputs against float;
* :func:`run_measured`: a command in a subprocess, with its wall time and peak resident memory (``ru_maxrss``);
  :func:`own_peak_mib` lets the child report its own, more exact peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QAttention", "MatMulNBits", "QLinearConvTranspose")
FLOAT_KERNELS = COMPUTE_OPS + ("FusedConv", "FusedMatMul", "FusedGemm", "NhwcFusedConv")


@dataclass
class Share:
    """``part`` of ``whole`` ops; ``float_ops`` names some of those outside ``part``."""

    part: int
    whole: int
    float_ops: list[str]

    @property
    def ratio(self) -> float | None:
        return self.part / self.whole if self.whole else None


def _graphs(graph):
    """A graph and every subgraph in it (If branches, Loop and Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def coverage(path: str | os.PathLike) -> Share:
    """Compute ops of the ONNX file at ``path`` whose data and weight inputs are DequantizeLinear outputs, or
    that are integer ops; subgraph ops count too (a body kept float lowers the share)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    quantized = total = 0
    kept: list[str] = []
    for graph in _graphs(model.graph):
        dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
        for node in graph.node:
            if node.op_type in INTEGER_OPS:
                quantized, total = quantized + 1, total + 1
            elif node.op_type in COMPUTE_OPS:
                total += 1
                if len(node.input) >= 2 and all(i in dequantized for i in node.input[:2]):
                    quantized += 1
                else:
                    kept.append(node.name or node.op_type)
    return Share(quantized, total, kept)


def ort_integer_share(path: str | os.PathLike) -> Share:
    """Compute kernels in the graph ONNX Runtime (CPU, all optimizations) runs for ``path``: integer ones of all."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimized), load_external_data=False)
    integer = total = 0
    kept: list[str] = []
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.op_type in INTEGER_OPS:
                integer, total = integer + 1, total + 1
            elif node.op_type in FLOAT_KERNELS:
                total += 1
                kept.append(node.op_type)
    return Share(integer, total, kept)


def session(path: str | os.PathLike, threads: int = 1):
    """An ORT CPU session of ``threads`` intra-op threads. Their pool does not spin between runs: the models'
    sessions take turns run by run, and a pool spinning after its run took the cores from the next session's
    (PP-OCRv4 rec at 2 threads, fastest of 10 on 2 cores: float 16.7-19.6 ms and ORT's export 13.1-19.7 ms from
    one process to the next spinning, 15.4-16.1 and 14.3-15.2 not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads > 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency_ms(path: str | os.PathLike, feed: dict[str, np.ndarray], runs: int = 20, threads: int = 1) -> float:
    """The fastest of ``runs`` runs (after 3 warm-up runs), in milliseconds: the least disturbed by other load."""
    sess = session(path, threads)
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def latencies(paths: dict[str, str | os.PathLike], feed: dict[str, np.ndarray], runs: int = 20,
              threads: int = 1) -> dict[str, tuple[float, float]]:
    """Fastest wall and CPU milliseconds of one run per model, the models taking turns run by run."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    for sess in sessions.values():
        for _ in range(3):
            sess.run(None, feed)
    best = {name: (float("inf"), float("inf")) for name in sessions}
    for _ in range(runs):
        for name, sess in sessions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            sess.run(None, feed)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], 1000 * wall), min(best[name][1], 1000 * cpu))
    return best


def sqnr_db(reference: list[np.ndarray], quantized: list[np.ndarray]) -> float:
    """10 log10(signal / noise) over all the given float outputs together (inf when they are equal, -inf when
    the float outputs are all zero and the others not)."""
    signal = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((np.asarray(r, np.float64) - np.asarray(q, np.float64)) ** 2))
                for r, q in zip(reference, quantized, strict=True))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal else float("-inf")


def run_measured(argv: list[str], timeout: float, env: dict | None = None) -> tuple[dict, float, float]:
    """Run ``argv`` (a Python script that writes a JSON result to the path in ``$MEASURE_RESULT``) in a fresh
    process; returns its result (or ``{"error": ...}``), its wall seconds and its peak RSS in MiB (``ru_maxrss``
    from ``os.wait4``; it starts from the parent's resident set at fork, so keep the parent small)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    with tempfile.TemporaryFile("w+") as stderr_file:  # a file, not a pipe: a chatty child never blocks on it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr_file, text=True,
                                env={**os.environ, **(env or {}), "MEASURE_RESULT": str(result_path)})
        # a blocking wait ends the moment the child does (polling every 50 ms rounded a 0.25 s run up by up to
        # 20%); the timer kills a child that runs past the timeout
        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        stderr_file.seek(0)
        stderr = stderr_file.read()
    timed_out = fired.is_set()
    try:
        result = json.loads(result_path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        result = {}
    result_path.unlink(missing_ok=True)
    if not result:
        reason = f"timed out after {timeout:.0f} s" if timed_out else f"exit {proc.returncode}"
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        result = {"error": f"{reason}: {tail}"[:300]}
    return result, seconds, usage.ru_maxrss / 1024.0


def byte_compile_qtool() -> None:
    """Byte-compile qtool's source trees (core, plugins, contrib) as pip does for an installed wheel, so that a timed
    process does not compile them (an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would, on every run,
    while onnxruntime.quantization's files are compiled at install)."""
    import compileall

    repository = Path(__file__).resolve().parents[1]
    for source in [repository / "core" / "src", *repository.glob("plugins/*/src"), *repository.glob("contrib/*/src")]:
        compileall.compile_dir(source, quiet=1)


def own_peak_mib() -> float | None:
    """This process's peak resident set since its exec (VmHWM). Not ru_maxrss: on Linux a child's ru_maxrss starts
    at its parent's resident set at fork, which survives the exec, so it would report the parent's size."""
    try:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return None


def write_result(result: dict) -> None:
    """The child's side of :func:`run_measured`."""
    Path(os.environ["MEASURE_RESULT"]).write_text(json.dumps(result))


def machine() -> str:
    """'<cpu model>, N cores, Python x.y, onnxruntime v, onnx v, ml_dtypes v' for report headers (onnx imports
    ml_dtypes in every quantizing process: 0.7.0 took 0.6 s of it, 0.6.0 4 ms)."""
    import platform

    import ml_dtypes
    import onnx
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, onnxruntime {ort.__version__}, "
            f"onnx {onnx.__version__}, ml_dtypes {ml_dtypes.__version__}")
