"""Sequence models of the zoo (bench/zoo_models.py): a decoder with its KV cache fed by a real generation loop, a
mixture of experts, a speech Conformer with an STFT front end, and a T5 decoder with cross-attention; small, built
offline with seeded random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torch_models import randomize
from zoo_models import Entry, Feed, _export, _Hidden, _normal, _text_feed

LAYERS, VOCAB = 2, 100


# -- a causal LM with its KV cache -----------------------------------------------------------------------------------
class _CachedCausalLM(nn.Module):
    """A transformers causal LM whose cache travels as flat tensors, as Optimum exports it: inputs
    ``past_key_values.{i}.key/value`` [batch, kv_heads, past, head_dim]; outputs logits and
    ``present.{i}.key/value``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])


def _cache_names(prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(LAYERS) for kind in ("key", "value")]


def _generation_feeds(path: Path, prompts: int = 6, steps: int = 4) -> list[dict[str, np.ndarray]]:
    """The model calls of a greedy generation loop in ONNX Runtime on the float model: per prompt (lengths 3-12) a
    first step with a zero-length past, then one-token steps whose past grows by the presents of the step before."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    past_names, outputs = _cache_names("past_key_values"), [o.name for o in session.get_outputs()]
    _, heads, _, dim = session.get_inputs()[3].shape
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(prompts):
        ids = rng.integers(0, VOCAB, (1, int(rng.integers(3, 13)))).astype(np.int64)
        past = {name: np.zeros((1, heads, 0, dim), np.float32) for name in past_names}
        for _ in range(steps):
            total = past[past_names[0]].shape[2] + ids.shape[1]
            feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                    "position_ids": np.arange(total - ids.shape[1], total, dtype=np.int64)[None], **past}
            feeds.append(feed)
            result = dict(zip(outputs, session.run(outputs, feed), strict=True))
            ids = np.array([[int(result["logits"][0, -1].argmax())]], np.int64)
            past = {name: result[name.replace("past_key_values", "present")] for name in past_names}
    return feeds


def _llama_kv(folder: Path) -> tuple[Path, Feed]:
    import transformers as T

    torch.manual_seed(0)
    config = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64,
                           attn_implementation="eager")
    past, present = _cache_names("past_key_values"), _cache_names("present")
    example = (torch.randint(0, VOCAB, (1, 4)), torch.ones(1, 7, dtype=torch.long), torch.arange(3, 7)[None],
               *[torch.randn(1, 2, 3, 8) for _ in past])
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"},
            **{name: {0: "batch", 2: "past"} for name in past}, **{name: {0: "batch", 2: "total"} for name in present}}
    path = _export(_CachedCausalLM(T.LlamaForCausalLM(config)), example,
                   ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present], folder / "model.onnx",
                   axes, opset=18)
    feeds = _generation_feeds(path)
    return path, lambda seed: feeds[seed % len(feeds)]


# -- mixture of experts ----------------------------------------------------------------------------------------------
class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _mixtral(folder: Path) -> tuple[Path, Feed]:
    """Experts by ``batched_mm``: each token's routed expert weights gathered, then MatMuls. The default loops over
    the experts hit (``torch.histc``), which the legacy exporter cannot export (no ``aten::histc`` symbolic)."""
    import transformers as T

    torch.manual_seed(0)
    config = T.MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                             num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=VOCAB,
                             max_position_embeddings=64, attn_implementation="eager",
                             experts_implementation="batched_mm", use_cache=False)
    example = (torch.randint(0, VOCAB, (1, 16)), torch.ones(1, 16, dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch", 1: "seq"}}
    return _export(_Logits(T.MixtralForCausalLM(config)), example, ["input_ids", "attention_mask"], ["logits"],
                   folder / "model.onnx", axes), _text_feed(VOCAB)


# -- T5 decoder ------------------------------------------------------------------------------------------------------
def _t5_decoder(folder: Path) -> tuple[Path, Feed]:
    """The decoder stack alone, as encoder-decoder exports split it: decoder ids and the encoder's hidden states
    (from the seeded encoder, on source sentences of 6-20 tokens) in, hidden states out."""
    import transformers as T

    torch.manual_seed(0)
    model = T.T5Model(T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=LAYERS, num_heads=2, vocab_size=VOCAB,
                                 decoder_start_token_id=0, attn_implementation="eager", use_cache=False)).eval()
    keys = ("input_ids", "encoder_hidden_states", "encoder_attention_mask")
    example = (torch.randint(0, VOCAB, (1, 5)), torch.randn(1, 12, 32), torch.ones(1, 12, dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "encoder_hidden_states": {0: "batch", 1: "source"},
            "encoder_attention_mask": {0: "batch", 1: "source"}, "hidden": {0: "batch", 1: "seq"}}
    path = _export(_Hidden(model.get_decoder(), keys), example, list(keys), ["hidden"], folder / "model.onnx", axes)
    encoder = model.get_encoder()

    def feed(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        source = torch.from_numpy(rng.integers(0, VOCAB, (1, int(rng.integers(6, 21)))))
        with torch.no_grad():
            hidden = encoder(input_ids=source).last_hidden_state.numpy()
        return {"input_ids": rng.integers(0, VOCAB, (1, int(rng.integers(1, 11)))).astype(np.int64),
                "encoder_hidden_states": hidden, "encoder_attention_mask": np.ones(source.shape, np.int64)}
    return path, feed


# -- speech Conformer ------------------------------------------------------------------------------------------------
DIM, HEADS, MELS, TOKENS = 32, 4, 24, 32


class LogMel(nn.Module):
    """|STFT| (a DFT op at opset 17), a mel filter bank as a MatMul, log."""

    def __init__(self, n_fft: int = 256, hop: int = 128) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))
        self.register_buffer("mel", torch.rand(n_fft // 2 + 1, MELS) * 0.1)

    def forward(self, wav):
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=False, return_complex=False)
        magnitude = (spec.pow(2).sum(-1) + 1e-6).sqrt()  # [batch, bins, frames]
        return torch.log(magnitude.transpose(1, 2) @ self.mel + 1e-6)


def relative_positions(frames: int) -> torch.Tensor:
    """Sinusoids of the relative positions frames-1 .. -(frames-1) (a float Range), [2 frames - 1, DIM]."""
    position = torch.arange(frames - 1, -frames, -1.0)[:, None]
    rate = torch.exp(torch.arange(0, DIM, 2).float() * (-math.log(1e4) / DIM))
    return torch.cat([torch.sin(position * rate), torch.cos(position * rate)], -1)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with relative positional scores (Transformer-XL's u, v biases and shift)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out, self.pos = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM), nn.Linear(DIM, DIM, bias=False)
        self.u, self.v = (nn.Parameter(torch.randn(HEADS, DIM // HEADS) * 0.1) for _ in range(2))

    def forward(self, x, positions):
        batch, frames, _ = x.shape
        q, k, v = self.qkv(x).view(batch, frames, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        p = self.pos(positions).view(-1, HEADS, DIM // HEADS).transpose(0, 1)
        content = (q + self.u[None, :, None]) @ k.transpose(-1, -2)
        relative = (q + self.v[None, :, None]) @ p.transpose(-1, -2)  # [batch, heads, frames, 2 frames - 1]
        relative = F.pad(relative, (1, 0)).view(batch, HEADS, -1, frames)[:, :, 1:]
        relative = relative.reshape(batch, HEADS, frames, -1)[..., :frames]
        weights = torch.softmax((content + relative) / math.sqrt(DIM // HEADS), -1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, frames, DIM))


class ConvModule(nn.Module):
    """LayerNorm, pointwise Conv1d, GLU, depthwise Conv1d, BatchNorm, SiLU, pointwise Conv1d."""

    def __init__(self, kernel: int = 15) -> None:
        super().__init__()
        self.norm, self.expand = nn.LayerNorm(DIM), nn.Conv1d(DIM, 2 * DIM, 1)
        self.depthwise = nn.Conv1d(DIM, DIM, kernel, padding=kernel // 2, groups=DIM)
        self.bn, self.project = nn.BatchNorm1d(DIM), nn.Conv1d(DIM, DIM, 1)

    def forward(self, x):
        y = F.glu(self.expand(self.norm(x).transpose(1, 2)), dim=1)
        return self.project(F.silu(self.bn(self.depthwise(y)))).transpose(1, 2)


def _feed_forward() -> nn.Module:
    return nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, 4 * DIM), nn.SiLU(), nn.Linear(4 * DIM, DIM))


class ConformerBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ff1, self.ff2, self.conv = _feed_forward(), _feed_forward(), ConvModule()
        self.attention_norm, self.attention, self.norm = nn.LayerNorm(DIM), RelativeAttention(), nn.LayerNorm(DIM)

    def forward(self, x, positions):
        x = x + 0.5 * self.ff1(x)
        x = x + self.attention(self.attention_norm(x), positions)
        x = x + self.conv(x)
        return self.norm(x + 0.5 * self.ff2(x))


class Conformer(nn.Module):
    """Log-mel front end, Conv2d subsampling by 4, Conformer blocks, CTC head (log-probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.front = LogMel()
        self.subsample = nn.Sequential(nn.Conv2d(1, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.ReLU())
        self.project = nn.Linear(8 * (((MELS - 1) // 2 - 1) // 2), DIM)
        self.blocks = nn.ModuleList(ConformerBlock() for _ in range(LAYERS))
        self.ctc = nn.Linear(DIM, TOKENS)

    def forward(self, wav):
        f = self.subsample(self.front(wav)[:, None])
        batch, channels, frames, mels = f.shape
        x = self.project(f.transpose(1, 2).reshape(batch, frames, channels * mels))
        positions = relative_positions(frames)
        for block in self.blocks:
            x = block(x, positions)
        return torch.log_softmax(self.ctc(x), -1)


def _wav(seed: int) -> dict[str, np.ndarray]:
    """A tone in noise, 3000-8000 samples."""
    rng = np.random.default_rng(seed)
    samples = np.arange(int(rng.integers(3000, 8000)))
    return {"wav": (np.sin(samples * rng.uniform(0.01, 0.3)) * 0.5 + _normal(samples.shape, seed, 0.1))[None]
            .astype(np.float32)}


def _conformer(folder: Path) -> tuple[Path, Feed]:
    torch.manual_seed(0)
    path = _export(randomize(Conformer(), 0), (torch.from_numpy(_wav(0)["wav"]),), ["wav"], ["log_probs"],
                   folder / "model.onnx", {"wav": {0: "batch", 1: "samples"}, "log_probs": {0: "batch", 1: "frames"}})
    return path, _wav


def entries() -> list[Entry]:
    return [
        Entry("hf-llama-kv", "Llama causal LM (GQA) with its KV cache as inputs and outputs, fed by a greedy "
              "generation loop (zero-length past, then one token at a time)", _llama_kv),
        Entry("hf-mixtral", "Mixtral causal LM: mixture of 4 experts, top-2 routing (TopK), expert weights gathered "
              "per token", _mixtral),
        Entry("conformer-stft", "speech Conformer: STFT (DFT) log-mel front end, relative sinusoidal positions, "
              "depthwise Conv1d and GLU, CTC head; audio of varying lengths", _conformer),
        Entry("hf-t5-decoder", "T5 decoder stack: cross-attention on encoder_hidden_states, varying lengths",
              _t5_decoder),
    ]
