"""Executor speed: float and int8 simulation against onnxruntime float, on CNNs.

"sim": every Conv and Gemm gets int8 configs by hand (:func:`annotate_int8`):
asymmetric per-tensor input and output (ranges from one float run), symmetric
per-channel weight, int32 bias. "pipeline": the graph ``qtool.quantize`` makes for
the onnxruntime platform (fused activations, shared configs, baked weights).
Times are the best of ``--repeat`` interleaved runs of ``forward`` on numpy input.

    python bench/executor.py [--batch 8] [--size 224] [--repeat 10] [--threads N] [--models resnet18 mobilenetv2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import qtool
import torch
import torch_models
from qtool.executor import TorchExecutor
from qtool.ir import Graph, from_model_proto
from qtool.quant import OpQuantConfig, QuantScheme, TensorQuantizationConfig, compute_scale_offset
from rich.console import Console
from rich.table import Table

ACTIVATION = QuantScheme.integer(8, symmetric=False)
BIAS = QuantScheme.integer(32, per_channel=True, channel_axis=0)
QUANTIZED_TYPES = ("Conv", "Gemm", "MatMul")


def observed_ranges(graph: Graph, feeds) -> dict[str, tuple[float, float]]:
    """min/max of every activation that a Conv/Gemm/MatMul reads or writes, over one float run."""
    ranges = {}

    def hook(op, inputs, outputs):
        if op.op_type in QUANTIZED_TYPES:
            for var, t in (*zip(op.inputs[:2], inputs[:2], strict=True), (op.outputs[0], outputs[0])):
                if not var.is_parameter:
                    ranges[var.name] = (float(t.min()), float(t.max()))

    executor = TorchExecutor(graph)
    executor.quantize = False
    handle = executor.add_hook(hook)
    executor.forward(feeds)
    handle.remove()
    return ranges


def annotate_int8(graph: Graph, feeds) -> int:
    """int8 configs on every Conv/Gemm/MatMul input, weight and output, int32 bias; returns how many ops.

    Activations: asymmetric per tensor, ranges from one float run on ``feeds``.
    Weights: symmetric per output channel (Conv axis 0, Gemm by transB, MatMul the last axis).
    """
    ranges = observed_ranges(graph, feeds)
    ops = [op for op in graph.operations.values() if op.op_type in QUANTIZED_TYPES]
    for op in ops:
        a_in, a_out = _activation(ranges[op.inputs[0].name]), _activation(ranges[op.outputs[0].name])
        second = op.inputs[1]
        if not second.is_parameter:  # activation x activation (attention)
            op.quant = OpQuantConfig([a_in, _activation(ranges[second.name])], [a_out])
            continue
        w = _weight(op, second.value)
        configs = [a_in, w]
        if len(op.inputs) > 2 and op.inputs[2] is not None:
            b = TensorQuantizationConfig(BIAS, role="bias")
            b.make_passive(lambda a_in=a_in, w=w: (a_in.scale * w.scale, np.zeros(w.scale.shape, np.int32)))
            configs.append(b)
        op.quant = OpQuantConfig(configs, [a_out])
    return len(ops)


def _weight(op, value: np.ndarray) -> TensorQuantizationConfig:
    if op.op_type == "Conv":
        axis = 0
    elif op.op_type == "Gemm":
        axis = 0 if op.attributes.get("transB", 0) else 1
    else:
        axis = value.ndim - 1
    scheme = QuantScheme.integer(8, per_channel=True, channel_axis=axis)
    reduce = tuple(d for d in range(value.ndim) if d != axis)
    tqc = TensorQuantizationConfig(scheme, role="weight")
    tqc.set_params(*compute_scale_offset(scheme, value.min(reduce), value.max(reduce)))
    return tqc


def _activation(bounds: tuple[float, float]) -> TensorQuantizationConfig:
    tqc = TensorQuantizationConfig(ACTIVATION)
    tqc.set_params(*compute_scale_offset(ACTIVATION, *bounds))
    return tqc


def best_times(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time per run in seconds; runs are interleaved so load changes hit all alike."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def bench_model(name: str, batch: int, size: int, repeat: int, threads: int) -> dict:
    model = torch_models.cnn_onnx(name, size=size)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    float_exec = TorchExecutor(from_model_proto(model))
    sim_graph = from_model_proto(model)
    quantized_ops = annotate_int8(sim_graph, [x])
    sim_exec = TorchExecutor(sim_graph)
    pipeline_exec = TorchExecutor(qtool.quantize(from_model_proto(model), "onnxruntime", [{"image": x}]).graph)
    reference = session.run(None, {"image": x})[0]
    float_err = float(np.abs(float_exec.forward([x])[0] - reference).max())
    sim_err = float(np.abs(sim_exec.forward([x])[0] - reference).max())
    times = best_times({"ort": lambda: session.run(None, {"image": x}), "float": lambda: float_exec.forward([x]),
                        "sim": lambda: sim_exec.forward([x]), "pipeline": lambda: pipeline_exec.forward([x])}, repeat)
    return {"model": name, "ops": len(sim_graph.operations), "quantized": quantized_ops, **times,
            "float_err": float_err, "sim_err": sim_err, "scale": float(np.abs(reference).max()),
            "sites": len(sim_exec.fake_quant_sites()), "pipeline_sites": len(pipeline_exec.fake_quant_sites())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenetv2"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for torch and onnxruntime alike (default: torch's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench_model(name, args.batch, args.size, args.repeat, args.threads) for name in args.models]
    table = Table(title=f"executor vs onnxruntime, batch {args.batch}x3x{args.size}x{args.size}, best of {args.repeat}",
                  caption=f"goals: float/ORT <= 2, sim/float <= 1.5. torch {torch.__version__} "
                          f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}. "
                          "err: max |executor - ORT float| (for sim, the int8 error)")
    for column in ("model", "ORT ms", "float ms", "sim ms", "pipeline ms", "float/ORT", "sim/float",
                   "pipeline/float", "max|y|", "float err", "sim err", "sites sim/pipeline"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], *(f"{r[k] * 1e3:.1f}" for k in ("ort", "float", "sim", "pipeline")),
                      _ratio(r["float"] / r["ort"], 2.0), _ratio(r["sim"] / r["float"], 1.5),
                      _ratio(r["pipeline"] / r["float"], 1.5), f"{r['scale']:.3g}", f"{r['float_err']:.1e}",
                      f"{r['sim_err']:.1e}", f"{r['sites']}/{r['pipeline_sites']}")
    Console(width=max(Console().width, 120)).print(table)


def _ratio(value: float, goal: float) -> str:
    colour = "green" if value <= goal else "red"
    return f"[{colour}]{value:.2f}[/{colour}]"


if __name__ == "__main__":
    main()
