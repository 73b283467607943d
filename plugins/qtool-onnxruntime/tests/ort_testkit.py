"""Helpers for the ONNX Runtime platform's tests: tiny models, calibrated graphs, ORT's optimized graph."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import qtool
import torch
from onnx import TensorProto, helper, numpy_helper
from qtool.calibration import calibrate, load_calibration_data
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto
from qtool.quant import OpQuantConfig, QuantizationState, QuantScheme, TensorQuantizationConfig, quantized_tensors
from qtool.testing import quantize_by_hand
from qtool_onnxruntime.session import cpu_session, session_options

INTEGER_KERNELS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger",
                             "MatMulInteger", "DynamicQuantizeMatMul", "QLinearAdd"})
FLOAT_COMPUTE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul",
                           "MatMulNBits"})
COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")

UINT8 = QuantScheme.integer(8, signed=False, symmetric=False)
INT8_ASYM = QuantScheme.integer(8, symmetric=False)
INT8_SYM = QuantScheme.integer(8)
INT8_PER_CHANNEL = QuantScheme.integer(8, per_channel=True, channel_axis=0)


# -- models -------------------------------------------------------------------------
def single_op_proto(op_type: str, *, bias: bool = True, seed: int = 0, activation: str | None = None,
                    opset: int = 13) -> onnx.ModelProto:
    """One Conv (8 -> 16 channels, 3x3), Gemm (32 -> 16, transB) or MatMul (32 -> 16), optionally + Relu/Clip."""
    rng = np.random.default_rng(seed)

    def param(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    shapes = {"Conv": ([1, 8, 6, 6], (16, 8, 3, 3), [1, 16, 4, 4]), "ConvTranspose": ([1, 8, 6, 6], (8, 16, 3, 3),
              [1, 16, 8, 8]), "Gemm": ([2, 32], (16, 32), [2, 16]), "MatMul": ([2, 32], (32, 16), [2, 16])}
    x_shape, w_shape, y_shape = shapes[op_type]
    inits = [param("w", *w_shape)]
    inputs = ["x", "w"]
    if bias and op_type != "MatMul":
        inits.append(param("b", 16))
        inputs.append("b")
    attrs = {"transB": 1} if op_type == "Gemm" else {}
    out = "y" if activation is None else "pre"
    nodes = [helper.make_node(op_type, inputs, [out], name="op", **attrs)]
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", ["pre"], ["y"], name="act"))
    elif activation == "Clip":
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
        nodes.append(helper.make_node("Clip", ["pre", "lo", "hi"], ["y"], name="act"))
    graph = helper.make_graph(nodes, f"single_{op_type}", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                              x_shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def torch_proto(module: torch.nn.Module, example: torch.Tensor, opset: int = 13) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its retirement
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"])
    return onnx.load_from_string(buffer.getvalue())


class ResNetish(torch.nn.Module):
    """Stem conv, a residual block (two convs and an add), a strided conv, pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.down = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        x = torch.relu(self.down(x))
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TinyTransformer(torch.nn.Module):
    """One pre-norm encoder block: single-head attention and a GELU feed-forward, then a linear head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(width, width) for _ in range(4))
        self.up, self.down = torch.nn.Linear(width, 2 * width), torch.nn.Linear(2 * width, width)
        self.head = torch.nn.Linear(width, 4)
        self.scale = width ** -0.5

    def forward(self, x):
        h = self.norm1(x)
        attention = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) * self.scale, dim=-1)
        x = x + self.o(attention @ self.v(h))
        x = x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))
        return self.head(x)


def resnetish_proto() -> onnx.ModelProto:
    return torch_proto(ResNetish(), torch.randn(1, 3, 12, 12))


def transformer_proto() -> onnx.ModelProto:
    return torch_proto(TinyTransformer(), torch.randn(1, 6, 16))


# -- quantization by hand -------------------------------------------------------------------
def samples_for(graph, count: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{v.name: rng.standard_normal([int(d) for d in v.shape]).astype(np.float32) for v in graph.inputs}
            for _ in range(count)]


def calibrated(proto: onnx.ModelProto, activation: QuantScheme | None = UINT8,
               weight: QuantScheme | None = INT8_PER_CHANNEL, *, bias: str = "float", op_types=COMPUTE,
               fuse: bool = False, samples: list[dict] | None = None):
    """The model quantized by hand (qtool.testing) with activation ranges calibrated on ``samples``.

    ``fuse`` makes a Relu/Clip after a computing op quantize for it, as QuantizeFusion does:
    the op's output and the activation's input FP32, the activation's output quantized.
    """
    graph = from_model_proto(proto)
    quantize_by_hand(graph, activation, weight, bias=bias, op_types=op_types)
    if fuse:
        _fuse_activations(graph, activation)
    if activation is not None:
        for q in list(quantized_tensors(graph, roles=("activation",))):
            if not q.config.is_overlapped:
                q.config.restore_state(QuantizationState.INITIAL)  # let calibrate() measure it
        data = load_calibration_data(samples or samples_for(graph), graph, batch_size=1)
        calibrate(graph, data, progress=False)
    return graph


def _fuse_activations(graph, activation: QuantScheme) -> None:
    for op in graph.operations.values():
        producer = op.inputs[0].producer if op.inputs else None
        if op.op_type in ("Relu", "Clip") and producer is not None and producer.op_type in COMPUTE:
            producer.quant.outputs[0].keep_float()
            reads = TensorQuantizationConfig(activation, QuantizationState.FP32)
            op.quant = OpQuantConfig([reads] + [None] * (len(op.inputs) - 1), [TensorQuantizationConfig(activation)])


def simulate(graph, samples: list[dict]) -> list[list[np.ndarray]]:
    """qtool's simulation of ``graph`` on each sample (TorchExecutor)."""
    executor = TorchExecutor(graph)
    return [executor.forward(sample) for sample in samples]


# -- ONNX Runtime ------------------------------------------------------------------------------
def optimized_ops(model: str | Path | onnx.ModelProto, workdir: Path) -> list[str]:
    """Op types of ORT's optimized graph (extended level, CPU) for ``model``."""
    target = workdir / "optimized.onnx"
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    cpu_session(source, session_options(target))
    return [node.op_type for node in onnx.load(target).graph.node]


def run(model: str | Path | onnx.ModelProto, feeds: dict, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED):
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return cpu_session(source, session_options(level=level)).run(None, feeds)


def export(graph, tmp_path: Path, platform: str = "onnxruntime", **options) -> Path:
    """Export with ``platform`` into ``tmp_path`` and return the model's path."""
    paths = qtool.get_platform(platform).export(graph, tmp_path / "model.onnx", qtool.ExportOptions(**options))
    return paths[0]


def nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def fork_proto(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv 'stem' -> t; t read by Conv 'left' and Conv 'right' (a tensor with two readers)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), f"w_{n}")
             for n in ("stem", "left", "right")]
    nodes = [helper.make_node("Conv", ["x", "w_stem"], ["t"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["t", "w_left"], ["y1"], name="left", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["t", "w_right"], ["y2"], name="right", pads=[1, 1, 1, 1])]
    shape = [1, 8, 6, 6]
    graph = helper.make_graph(nodes, "fork", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("y1", "y2")],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def agreement(graph, path: Path, count: int = 4) -> dict:
    """The platform's agreement report: ORT on the exported file against TorchExecutor, on ``count`` samples."""
    samples = samples_for(graph, count, seed=1)
    return qtool.get_platform("onnxruntime").agreement(graph, [Path(path)], samples, simulate(graph, samples))


def shared_weight_proto() -> onnx.ModelProto:
    """Conv 'first' and Conv 'second' read the same weight initializer 'w' (8 -> 8 channels)."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"], name="first", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["t", "w"], ["y"], name="second", pads=[1, 1, 1, 1])]
    shape = [1, 8, 6, 6]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
