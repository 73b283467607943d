"""A Llama-style decoder written straight to ONNX with external data, one weight at a time: whatever its size,
the builder holds one weight matrix in memory (a 1.5 B model is a 6 GB data file and a small .onnx).

The graph: token embedding (Gather), per layer RMSNorm, q/k/v/o projections (MatMul, ``x @ W``), rotary
position embedding, attention over a key/value cache, RMSNorm, SwiGLU MLP (gate/up/down), residual adds;
a final RMSNorm and an LM head. Inputs: ``input_ids`` [batch, seq] int64, ``attention_bias`` [batch, 1, seq,
past + seq] (0 where a token may look, a large negative number elsewhere), ``cos``/``sin`` [batch, 1, seq, head_dim],
``past_key.i``/``past_value.i`` [batch, heads, past, head_dim]; outputs ``logits`` and ``present_key.i``/
``present_value.i``. :func:`decoder_feeds` makes the inputs of a prefill or a decode step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_ALIGN = 4096  # large tensors start on a page: runtimes can map them


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int = 32000
    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 28
    heads: int = 16
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        per_layer = 4 * self.hidden ** 2 + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


class _Weights:
    """Streams each weight to the data file and keeps only its TensorProto (a reference into the file)."""

    def __init__(self, data_path: Path, seed: int) -> None:
        self.file = open(data_path, "wb")  # noqa: SIM115 (closed by write_llama)
        self.location = data_path.name
        self.seed = seed
        self.tensors: list[TensorProto] = []

    def add(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        if array.nbytes < 1024:
            self.tensors.append(numpy_helper.from_array(array, name))
            return name
        offset = -(-self.file.tell() // _ALIGN) * _ALIGN
        self.file.seek(offset)
        array.tofile(self.file)
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        for key, value in (("location", self.location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        tensor.data_location = TensorProto.EXTERNAL
        self.tensors.append(tensor)
        return name

    def random(self, name: str, shape: tuple[int, ...], std: float) -> str:
        rng = np.random.default_rng([self.seed, len(self.tensors)])
        return self.add(name, rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def ones(self, name: str, size: int) -> str:
        return self.add(name, np.ones(size, np.float32))


def write_llama(path: str | os.PathLike, config: LlamaConfig = LlamaConfig(), seed: int = 0) -> Path:
    """Write the decoder to ``path`` with its weights in ``<name>.data`` beside it; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = _Weights(path.with_name(path.name + ".data"), seed)
    try:
        graph = _graph(config, weights)
    finally:
        weights.file.close()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qtool.testing")
    model.ir_version = 8
    onnx.save_model(model, path)
    return path


def _graph(c: LlamaConfig, w: _Weights) -> onnx.GraphProto:
    nodes: list[onnx.NodeProto] = []
    d, hd, std = c.hidden, c.head_dim, 0.02

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def rms_norm(x: str, prefix: str) -> str:
        square = node("Mul", [x, x], f"{prefix}.square")
        mean = node("ReduceMean", [square], f"{prefix}.mean", axes=[-1], keepdims=1)
        root = node("Sqrt", [node("Add", [mean, "eps"], f"{prefix}.var_eps")], f"{prefix}.rms")
        return node("Mul", [node("Div", [x, root], f"{prefix}.normed"), w.ones(f"{prefix}.weight", d)],
                    f"{prefix}.out")

    def rotary(x: str, prefix: str) -> str:
        first = node("Slice", [x, "zero", "half", "last_axis"], f"{prefix}.first")
        second = node("Slice", [x, "half", "head_dim", "last_axis"], f"{prefix}.second")
        rotated = node("Concat", [node("Neg", [second], f"{prefix}.neg"), first], f"{prefix}.rotated", axis=-1)
        return node("Add", [node("Mul", [x, "cos"], f"{prefix}.cos"),
                            node("Mul", [rotated, "sin"], f"{prefix}.sin")], f"{prefix}.out")

    def heads(x: str, prefix: str) -> str:
        return node("Transpose", [node("Reshape", [x, "heads_shape"], f"{prefix}.split")], f"{prefix}.heads",
                    perm=[0, 2, 1, 3])

    constants = [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in (
        ("eps", c.eps, np.float32), ("scale", 1.0 / np.sqrt(hd), np.float32), ("zero", [0], np.int64),
        ("half", [hd // 2], np.int64), ("head_dim", [hd], np.int64), ("last_axis", [-1], np.int64),
        ("heads_shape", [0, 0, c.heads, hd], np.int64), ("hidden_shape", [0, 0, d], np.int64))]
    x = node("Gather", [w.random("embed_tokens.weight", (c.vocab, d), std), "input_ids"], "embedded")
    for i in range(c.layers):
        p = f"layers.{i}"
        normed = rms_norm(x, f"{p}.input_layernorm")
        q, k, v = (node("MatMul", [normed, w.random(f"{p}.self_attn.{n}_proj.weight", (d, d), std)],
                        f"{p}.self_attn.{n}_proj") for n in "qkv")
        q, k = rotary(heads(q, f"{p}.q"), f"{p}.q_rope"), rotary(heads(k, f"{p}.k"), f"{p}.k_rope")
        keys = node("Concat", [f"past_key.{i}", k], f"present_key.{i}", axis=2)
        values = node("Concat", [f"past_value.{i}", heads(v, f"{p}.v")], f"present_value.{i}", axis=2)
        scores = node("MatMul", [q, node("Transpose", [keys], f"{p}.keys_t", perm=[0, 1, 3, 2])], f"{p}.scores")
        scores = node("Add", [node("Mul", [scores, "scale"], f"{p}.scaled"), "attention_bias"], f"{p}.masked")
        context = node("MatMul", [node("Softmax", [scores], f"{p}.probs", axis=-1), values], f"{p}.context")
        context = node("Reshape", [node("Transpose", [context], f"{p}.context_t", perm=[0, 2, 1, 3]),
                                   "hidden_shape"], f"{p}.merged")
        attn = node("MatMul", [context, w.random(f"{p}.self_attn.o_proj.weight", (d, d), std)],
                    f"{p}.self_attn.o_proj")
        x = node("Add", [x, attn], f"{p}.attn_residual")
        normed = rms_norm(x, f"{p}.post_attention_layernorm")
        gate, up = (node("MatMul", [normed, w.random(f"{p}.mlp.{n}_proj.weight", (d, c.intermediate), std)],
                         f"{p}.mlp.{n}_proj") for n in ("gate", "up"))
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{p}.mlp.sigmoid")], f"{p}.mlp.silu")
        down = node("MatMul", [node("Mul", [silu, up], f"{p}.mlp.gated"),
                               w.random(f"{p}.mlp.down_proj.weight", (c.intermediate, d), std)],
                    f"{p}.mlp.down_proj")
        x = node("Add", [x, down], f"{p}.mlp_residual")
    normed = rms_norm(x, "norm")
    node("MatMul", [normed, w.random("lm_head.weight", (d, c.vocab), std)], "logits")

    cache = ["batch", c.heads, "past", hd]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_bias", TensorProto.FLOAT, ["batch", 1, "seq", "total"]),
              helper.make_tensor_value_info("cos", TensorProto.FLOAT, ["batch", 1, "seq", hd]),
              helper.make_tensor_value_info("sin", TensorProto.FLOAT, ["batch", 1, "seq", hd])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", c.vocab])]
    for i in range(c.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT, cache))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT,
                                                         ["batch", c.heads, "total", hd]))
    return helper.make_graph(nodes, "llama", inputs, outputs, initializer=[*constants, *w.tensors])


def decoder_feeds(config: LlamaConfig, tokens: np.ndarray, past: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs of one call on ``tokens`` [batch, seq] after ``past`` cached positions (random cache values
    from ``seed``): a causal attention bias, rotary tables for positions past .. past + seq - 1."""
    batch, seq = tokens.shape
    total = past + seq
    allowed = np.arange(total)[None, :] <= past + np.arange(seq)[:, None]
    bias = np.where(allowed, 0.0, -1e9).astype(np.float32)[None, None].repeat(batch, axis=0)
    hd = config.head_dim
    inverse = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
    angles = np.arange(past, total)[:, None] * inverse[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    table = lambda f: np.broadcast_to(f(angles).astype(np.float32), (batch, 1, seq, hd)).copy()  # noqa: E731
    feeds = {"input_ids": tokens.astype(np.int64), "attention_bias": bias, "cos": table(np.cos),
             "sin": table(np.sin)}
    rng = np.random.default_rng(seed)
    for i in range(config.layers):
        for kind in ("key", "value"):
            feeds[f"past_{kind}.{i}"] = rng.standard_normal((batch, config.heads, past, hd), dtype=np.float32)
    return feeds
