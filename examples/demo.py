"""qtool's demo: quantize a small trained CNN for ONNX Runtime, evaluate it, analyse it, export it.

Run with `make demo` (files in out/demo), or `python examples/demo.py FOLDER`. Everything is offline: the data
ships with scikit-learn.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

import qtool
from qtool.analysis import layerwise_sensitivity
from qtool.cli.quantize import print_summary
from qtool.executor import TorchExecutor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "out" / "demo"
PLATFORM = "onnxruntime-int32bias"


def accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": images})[0]
    return float((logits.argmax(axis=1) == labels).mean())


def main(out: Path = OUT) -> int:
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    console.print("[bold]1. Training a small CNN on scikit-learn's handwritten digits[/bold]")
    float_model, split = digits_model.build(out)
    calib = out / "calibration.npz"
    np.savez(calib, image=split.calib_x)
    console.print(f"   {len(split.train_x)} training, {len(split.calib_x)} calibration, "
                  f"{len(split.eval_x)} evaluation images; model: {float_model}")

    console.print(f"[bold]2. Quantizing for '{PLATFORM}' (int8 per-channel weights, int8 activations, int32 bias)"
                  "[/bold]")
    # check_agreement: step 5 shows how close ONNX Runtime runs the file to qtool's simulation (by default the
    # check runs only where a step of the run used the simulation)
    result = qtool.quantize(float_model, PLATFORM, calib, output=out / "digits_int8.onnx", progress=False,
                            check_agreement=True)
    print_summary(result, console)

    console.print("[bold]3. Accuracy on the evaluation images (ONNX Runtime)[/bold]")
    float_acc = accuracy(float_model, split.eval_x, split.eval_y)
    quant_acc = accuracy(result.files[0], split.eval_x, split.eval_y)
    table = Table("model", "top-1 accuracy", "relative drop")
    table.add_row("float", f"{float_acc:.2%}", "")
    table.add_row("quantized (ORT)", f"{quant_acc:.2%}", f"{(float_acc - quant_acc) / float_acc:.2%}")
    console.print(table)

    console.print("[bold]4. The layers that cost most (quantized alone, error at the output)[/bold]")
    rows = layerwise_sensitivity(TorchExecutor(result.graph), [{"image": split.eval_x[:64]}])
    worst = Table("op", "type", "SNR (dB)", "cosine")
    for row in rows[:5]:
        worst.add_row(row.op, row.op_type, f"{row.snr_db:.1f}", f"{row.cosine:.5f}")
    console.print(worst)

    console.print("[bold]5. ONNX Runtime vs qtool's simulation[/bold]")
    agreement = result.agreement
    console.print(f"   {agreement['samples']} samples through {agreement['runtime']}: the outputs differ by at most "
                  f"{agreement['max_steps']:g} quantization steps, cosine similarity {agreement['min_cosine']:.6f}")
    console.print("[bold]6. Files[/bold]")
    for path in result.files:
        console.print(f"   {path}")
    console.print(f"Done in {time.perf_counter() - start:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
