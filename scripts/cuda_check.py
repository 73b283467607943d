"""Run the executor on CUDA and on CPU and compare: CNNs and a BERT-style encoder, float and int8 simulation.

Exits 0 when every pair agrees within tolerance, 1 on a mismatch, and 0 with a
"no CUDA" message on a machine without a usable GPU. The executor itself turns
TF32 off while it runs (qtool.executor.precision), so float results are
comparable; in int8 simulation a last-bit difference may move a value across a
rounding boundary, hence the looser tolerance there. Also prints the time of one
forward on each device (after a warm-up run; indicative only).

    python scripts/cuda_check.py [--batch 8] [--size 224]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import torch_models  # noqa: E402  (bench/ is on the path only now)
from executor import annotate_int8  # noqa: E402
from qtool.executor import TorchExecutor  # noqa: E402
from qtool.ir import from_model_proto  # noqa: E402

FLOAT_TOLERANCE = 1e-4  # of the output's largest magnitude
SIM_TOLERANCE = 2e-2


def models(batch: int, size: int):
    """(name, ModelProto, feeds) for each model checked."""
    image = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for name in ("resnet18", "mobilenetv2"):
        yield name, torch_models.cnn_onnx(name, size=size), {"image": image}
    yield "bert-encoder", torch_models.encoder_onnx(), torch_models.encoder_inputs(batch, 32)


def compare(name: str, model, feeds: dict, quantize: bool) -> tuple[float, float, dict[str, float]]:
    """max |cuda - cpu|, the CPU output's largest magnitude, and the seconds of one forward per device."""
    graph = from_model_proto(model)
    if quantize:
        annotate_int8(graph, feeds)
    outputs, seconds = [], {}
    for device in ("cpu", "cuda"):
        executor = TorchExecutor(graph, device=device)
        executor.quantize = quantize
        executor.forward(feeds)  # warm-up: kernels, caches, fake-quant parameters
        start = time.perf_counter()
        outputs.append(executor.forward(feeds)[0])  # numpy out: the GPU work has finished
        seconds[device] = time.perf_counter() - start
    cpu, cuda = outputs
    return float(np.abs(cpu.astype(np.float64) - cuda).max()), float(np.abs(cpu).max()), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA: torch {torch.__version__} sees no usable GPU; nothing to check")
        return 0
    print(f"{torch.cuda.get_device_name()} vs CPU, torch {torch.__version__}")
    failed = 0
    for name, model, feeds in models(args.batch, args.size):
        for quantize, tolerance in ((False, FLOAT_TOLERANCE), (True, SIM_TOLERANCE)):
            diff, scale, seconds = compare(name, model, feeds, quantize)
            ok = diff <= tolerance * max(scale, 1e-6)
            failed += not ok
            mode = "int8 sim" if quantize else "float"
            print(f"{'ok  ' if ok else 'FAIL'} {name:13s} {mode:8s} max|cuda-cpu| {diff:.3g} "
                  f"(max|y| {scale:.3g}, tolerance {tolerance:g} of it); forward cpu {seconds['cpu'] * 1e3:.1f} ms, "
                  f"cuda {seconds['cuda'] * 1e3:.1f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
