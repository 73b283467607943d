"""HTML report benchmark: size and load time of a 500+ op model's report in headless Chromium.

The model is a residual CNN made here with seeded random weights: BLOCKS blocks
of Conv 3x3 -> Relu -> Add (skip), 8 channels on 16x16, plus a head (3 ops per
block). It is analysed for onnxruntime on SAMPLES random samples, its page
written, then opened in Debian's chromium (``--headless``, no network):

* size: bytes of the page, and of its parts (the inline Vega bundle, the JSON);
* load: the page's own ``performance.now()`` once every chart on the first
  screen is drawn (navigation start -> parsed, scripts run, charts drawn), median
  of RUNS, and Chromium's wall time for the same page against a blank page.

For comparison, onnxruntime.quantization has no HTML report: its qdq_loss_debug
gives the tensors to compare and leaves the plotting to the user.

    python bench/report.py                  # 170 blocks (512 ops), 1 sample
    python bench/report.py --blocks 340 --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import qtool
from qtool.report.bundle import vega_bundle
from qtool.testing.browser import load

CHANNELS, SIZE = 8, 16


def residual_model(path: Path, blocks: int, seed: int = 0) -> Path:
    """BLOCKS x (Conv 3x3 -> Relu -> Add skip) on 1x8x16x16, then a global average and a Gemm head."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for b in range(blocks):
        weight = rng.normal(0, 0.4 / np.sqrt(CHANNELS * 9), (CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{b}"),
                  numpy_helper.from_array(rng.normal(0, 0.05, CHANNELS).astype(np.float32), f"b{b}")]
        nodes += [helper.make_node("Conv", [x, f"w{b}", f"b{b}"], [f"c{b}"], pads=[1, 1, 1, 1], name=f"conv{b}"),
                  helper.make_node("Relu", [f"c{b}"], [f"r{b}"], name=f"relu{b}"),
                  helper.make_node("Add", [x, f"r{b}"], [f"a{b}"], name=f"add{b}")]
        x = f"a{b}"
    inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (CHANNELS, 10)).astype(np.float32), "head"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", "head"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [1, CHANNELS, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=170)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = residual_model(folder / "residual.onnx", args.blocks)
        calib = folder / "calib.npz"
        np.savez(calib, input=np.random.default_rng(1).normal(size=(args.samples, CHANNELS, SIZE, SIZE))
                 .astype(np.float32))
        start = time.perf_counter()
        report = qtool.analyse(model, "onnxruntime", calib, samples=args.samples)
        analyse_s = time.perf_counter() - start
        page = folder / "report.html"
        start = time.perf_counter()
        report.to_html(page)
        render_s = time.perf_counter() - start
        blank = folder / "blank.html"
        blank.write_text("<!DOCTYPE html><html><body></body></html>")
        drawn, walls, blanks = [], [], []
        for _ in range(args.runs):
            loaded = load(page)
            assert not loaded.console, loaded.console
            drawn.append(int(re.search(r'data-rendered-ms="(\d+)"', loaded.dom).group(1)))
            walls.append(loaded.seconds)
            blanks.append(load(blank).seconds)
        size = page.stat().st_size
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
              f"{torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"model: {len(report.dispatch)} ops ({report.document['coverage']['quantized']} quantized), "
              f"{args.samples} samples; analyse {analyse_s:.1f} s, page written in {render_s:.2f} s")
        print(f"page: {size / 1e6:.2f} MB (Vega bundle {len(vega_bundle()) / 1e6:.2f} MB, "
              f"document JSON {len(report.to_json(indent=None)) / 1e6:.2f} MB)")
        print(f"charts drawn {statistics.median(drawn)} ms after navigation start (median of {args.runs}: {drawn}); "
              f"chromium wall {statistics.median(walls):.2f} s vs blank page {statistics.median(blanks):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
