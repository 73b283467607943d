"""A tiny byte-level transformer-style model for weight-only tests: embeddings, MLP blocks, an LM head.

Tokens are bytes (vocabulary 256); :func:`byte_tokens` reads real text that ships with Python.
The model has the layer kinds weight-only quantization meets in exported transformers: a Gather
embedding, MatMul projections with a bias Add, Gemm projections (transB=1, as GPT-2 exports write
``addmm``), LayerNormalization whose gain has a few outlier channels (what makes GPTQ/AWQ/HQQ
matter), and a MatMul LM head.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB = 256
TOKENS_INPUT = "input_ids"


def tiny_decoder_proto(seed: int = 0, *, dim: int = 64, hidden: int = 128, layers: int = 2, length: int = 32,
                       outliers: int = 4, outlier_gain: float = 20.0) -> onnx.ModelProto:
    """input_ids [batch, length] (int64) -> logits [batch, length, 256]; the residual stream is 2-D
    [batch * length, dim] in between (Gemm takes 2-D inputs). ``outliers`` channels of every LayerNorm
    gain are ``outlier_gain`` times larger than the others. Weights come from ``seed``."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def param(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def gain(name: str) -> str:
        g = 1.0 + 0.1 * rng.standard_normal(dim)
        g[rng.choice(dim, outliers, replace=False)] *= outlier_gain
        return param(name, g)

    x = "embedded"
    inits += [numpy_helper.from_array(np.array([-1, dim], np.int64), "rows_shape"),
              numpy_helper.from_array(np.array([-1, length, VOCAB], np.int64), "logits_shape")]
    nodes += [helper.make_node("Gather", [param("embed.weight", rng.normal(0, 1.0, (VOCAB, dim))), TOKENS_INPUT],
                               ["embedded_3d"], name="embed"),
              helper.make_node("Reshape", ["embedded_3d", "rows_shape"], [x], name="to_rows")]
    for i in range(layers):
        p = f"block{i}"
        normed = f"{p}.ln_out"
        nodes.append(helper.make_node("LayerNormalization", [x, gain(f"{p}.ln.weight"),
                                                             param(f"{p}.ln.bias", np.zeros(dim))],
                                      [normed], name=f"{p}.ln", axis=-1))
        up = param(f"{p}.up.weight", rng.normal(0, dim ** -0.5, (dim, hidden)))
        nodes += [helper.make_node("MatMul", [normed, up], [f"{p}.up_mm"], name=f"{p}.up"),
                  helper.make_node("Add", [f"{p}.up_mm", param(f"{p}.up.bias", rng.normal(0, 0.1, hidden))],
                                   [f"{p}.up_out"], name=f"{p}.up_bias"),
                  helper.make_node("Relu", [f"{p}.up_out"], [f"{p}.act"], name=f"{p}.act"),
                  helper.make_node("Gemm", [f"{p}.act", param(f"{p}.down.weight",
                                                              rng.normal(0, hidden ** -0.5, (dim, hidden))),
                                            param(f"{p}.down.bias", rng.normal(0, 0.1, dim))],
                                   [f"{p}.down_out"], name=f"{p}.down", transB=1),
                  helper.make_node("Add", [x, f"{p}.down_out"], [f"{p}.out"], name=f"{p}.residual")]
        x = f"{p}.out"
    nodes += [helper.make_node("LayerNormalization", [x, gain("final_ln.weight"), param("final_ln.bias", np.zeros(dim))],
                               ["final_ln_out"], name="final_ln", axis=-1),
              helper.make_node("MatMul", ["final_ln_out", param("head.weight", rng.normal(0, dim ** -0.5,
                                                                                        (dim, VOCAB)))],
                               ["logits_rows"], name="head"),
              helper.make_node("Reshape", ["logits_rows", "logits_shape"], ["logits"], name="to_batch")]
    graph = helper.make_graph(nodes, "qtool_tiny_decoder",
                              [helper.make_tensor_value_info(TOKENS_INPUT, TensorProto.INT64, ["batch", length])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", length, VOCAB])],
                              inits)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qtool.testing",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def tiny_decoder(path: str | os.PathLike, seed: int = 0, **sizes) -> Path:
    """Write :func:`tiny_decoder_proto` to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(tiny_decoder_proto(seed, **sizes), path)
    return path


def byte_tokens(count: int, length: int, *, offset: int = 0) -> np.ndarray:
    """``count`` windows of ``length`` bytes of real text (the sources of Python's ``os`` and ``json``
    modules), starting ``offset`` windows in, as int64 token ids [count, length]."""
    import json

    text = Path(os.__file__).read_bytes() + Path(json.__file__).read_bytes()
    start = offset * length
    needed = start + count * length
    if needed > len(text):
        raise ValueError(f"byte_tokens: {needed} bytes asked, {len(text)} available")
    return np.frombuffer(text[start:needed], np.uint8).astype(np.int64).reshape(count, length)
