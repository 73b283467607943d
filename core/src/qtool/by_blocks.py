"""Quantize a model larger than memory one segment at a time (a decoder's blocks, for a transformer).

The model loads lazily (weights stay mapped from its external data), is cut into segments of about
``block_bytes`` of parameters where few activations cross (:mod:`qtool.ir.segments`), and each segment goes
through :func:`qtool.quantize` on its own with calibration streamed through the model: a segment is calibrated
on its inputs as captured, quantized, exported and checked against the runtime, and its *quantized* outputs
(qtool's simulation of the written segment) become the next segment's inputs, as GPTQ streams layer by layer.
Each exported segment is appended to the output (:class:`qtool.ir.model_writer.ModelWriter`: nodes kept,
tensors streamed to ``<output>.data``), so memory holds about one segment, its activations and the packed
weights of none. At the end the written model is run in the platform's runtime and compared with the chained
simulation (``agreement``), as :func:`qtool.quantize` checks its files.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .calibration import load_calibration_data
from .config.names import check_names
from .errors import QtoolError
from .files import check_not_inputs, check_output_given, check_outputs
from .ir import Graph, data_path, load
from .ir.model_writer import ModelWriter
from .ir.segments import Segment, declare_outputs, segment_graph, split
from .one_at_a_time import one_at_a_time
from .pipeline import AGREEMENT_SAMPLES, _check_agreement, _check_runnable, _platform_and_config, quantize
from .platform import ExportOptions, platform_step

DEFAULT_BLOCK_BYTES = 256 * 2**20


@dataclass
class BlocksResult:
    """What :func:`quantize_by_blocks` did: the files, one summary per segment, the whole model's agreement."""

    files: list[Path]
    segments: list[dict] = field(default_factory=list)
    agreement: dict | None = None
    seconds: float = 0.0


@one_at_a_time
def quantize_by_blocks(model: str | os.PathLike | Graph, platform, calib, *, output: str | os.PathLike,
                       config=None, preset: str | None = None, accuracy: dict | None = None,
                       export: Any = None, block_bytes: int = DEFAULT_BLOCK_BYTES, calib_layout: str | None = None,
                       max_samples: int | None = None, device: str = "cpu",
                       log=None) -> BlocksResult:
    """Quantize ``model`` segment by segment and write it to ``output`` with external data.

    Takes :func:`qtool.quantize`'s ``platform``, ``calib``, ``config``, ``preset``, ``accuracy``, ``export``,
    ``calib_layout``, ``max_samples`` and ``device``; ``block_bytes`` is the parameter size a segment grows to
    before it may close. Every calibration sample is kept (as each segment's inputs) while the model is walked.
    ``log(message)`` hears of each segment.
    """
    start = time.monotonic()
    target, qconfig = _platform_and_config(platform, config, preset)
    check_output_given(output)
    written = {"output": [Path(output), data_path(output)]}  # what ModelWriter writes
    check_outputs(written, inputs=(model, calib, config))
    if block_bytes <= 0:
        raise QtoolError(f"block_bytes must be positive, got {block_bytes}")
    graph = model if isinstance(model, Graph) else load(model)
    check_not_inputs(written, graph.info.sources)
    check_names(qconfig, graph, "the model" if isinstance(model, Graph) else str(model))
    _check_runnable(graph)
    data = load_calibration_data(calib, graph, qconfig.calibration["batch_size"], layout=calib_layout,
                                 max_samples=max_samples)
    samples = [dict(s) for s in data.samples(max_samples or 2**62)]  # every sample: all of them stream
    segments = split(graph, block_bytes)
    last_reader = {v.name: s.index for s in segments for v in s.inputs}
    kept = {v.name for v in (*graph.inputs, *graph.outputs)}
    writer = ModelWriter(output, graph)
    result = BlocksResult(files=[])
    try:
        with tempfile.TemporaryDirectory(prefix=".qtool-blocks-", dir=Path(output).parent) as work:
            for segment in segments:
                result.segments.append(_quantize_segment(graph, segment, samples, target, Path(work), writer,
                                                         config=config, preset=preset, accuracy=accuracy,
                                                         export=export, device=device))
                _forget(samples, segment.index, last_reader, kept)
                if log is not None:
                    s = result.segments[-1]
                    log(f"segment {segment.index + 1}/{len(segments)}: {s['ops']} ops, {s['parameter_mb']:.3g} MB "
                        f"of parameters, {s['seconds']:.1f} s, agreement cosine {s['min_cosine']}, peak RSS so far "
                        f"{s['peak_rss_mb']} MB")
        result.files = writer.finish()
    except BaseException:
        writer.abort()
        raise
    checked = samples[:AGREEMENT_SAMPLES]
    with platform_step(target, "agreement"):
        result.agreement = target.agreement(graph, result.files, [{v.name: s[v.name] for v in graph.inputs}
                                                                  for s in checked],
                                            [[s[v.name] for v in graph.outputs] for s in checked])
    _check_agreement(result, isinstance(export, ExportOptions) and export.allow_unsupported)
    result.seconds = time.monotonic() - start
    return result


def _quantize_segment(graph: Graph, segment: Segment, samples: list[dict], target, work: Path,
                      writer: ModelWriter, **options) -> dict:
    """Quantize one segment on its captured inputs, append its export, and put its simulated quantized outputs
    in each sample (graph outputs only in the samples the final agreement reads)."""
    from .executor import TorchExecutor  # torch: imported once the inputs are checked

    start = time.monotonic()
    graph_inputs = {v.name for v in graph.inputs}
    dtypes = {v.name: (samples[0][v.name].dtype, samples[0][v.name].ndim)
              for v in segment.inputs if v.name not in graph_inputs}
    part = segment_graph(graph, segment, dtypes)
    feeds = [{v.name: s[v.name] for v in segment.inputs} for s in samples]
    names = [v.name for v in segment.outputs]
    declare_outputs(part, TorchExecutor(part, options["device"]).forward(feeds[0], names))
    path = work / f"segment{segment.index}.onnx"
    quantized = quantize(part, target, feeds, output=path, calib_layout="feeds", check_agreement=True,
                         **options)  # each segment's agreement is in its log line
    writer.add(onnx.load(path), f"segment{segment.index}")
    executor = TorchExecutor(quantized.graph, options["device"])
    kept = {v.name for v in graph.outputs}
    for i, (sample, feed) in enumerate(zip(samples, feeds, strict=True)):
        for name, value in zip(names, executor.forward(feed, names), strict=True):
            if name not in kept or i < AGREEMENT_SAMPLES:
                sample[name] = value
    summary = {"index": segment.index, "ops": len(segment.ops), "parameter_mb": segment.parameter_bytes / 2**20,
               "first_op": segment.ops[0].name, "last_op": segment.ops[-1].name,
               "quantized_ops": quantized.summary["ops"]["quantized"],
               "min_cosine": (quantized.agreement or {}).get("min_cosine"),
               "seconds": time.monotonic() - start}
    for file in work.iterdir():
        file.unlink()
    del executor, quantized, part
    _release_memory()
    summary["peak_rss_mb"] = _peak_rss_mb()
    return summary


def _peak_rss_mb() -> int | None:
    """This process's peak resident memory so far (Linux reports KiB), None where the OS does not say."""
    try:
        import resource
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _release_memory() -> None:
    """Collect the segment's objects and hand freed heap back to the system (glibc keeps it otherwise, and
    the heap of one segment after another looks like a leak)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _forget(samples: list[dict], index: int, last_reader: dict[str, int], kept: set[str]) -> None:
    """Drop the activations no later segment reads (graph inputs and outputs stay for the final agreement)."""
    for sample in samples:
        for name in [n for n in sample if n not in kept and last_reader.get(n, index + 1) <= index]:
            del sample[name]
