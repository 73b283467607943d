"""The model zoo of bench/zoo.py: small models, built offline with seeded random weights, that carry the patterns
that trip quantizers (plus the real trained models of bench/accuracy.py).

Every entry is ``Entry(name, pattern, build)``; ``build(folder) -> (onnx path, feed)`` writes the float model and
returns ``feed(seed) -> {input: array}``, one model call with exactly the shapes the model takes. CNNs are written
here in torch (torchvision does not install beside torch 2.13); transformers models come from small configs,
never from a hub; control-flow models are written with onnx.helper; sequence models (a KV-cache decoder, a
mixture of experts, a speech Conformer, a T5 decoder) live in bench/zoo_sequence.py.
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from torch_models import EncoderLayer, MobileNetV2, ResNet18, ResNet50, randomize  # noqa: E402

Feed = Callable[[int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Entry:
    name: str
    pattern: str
    build: Callable[[Path], tuple[Path, Feed]]


def _export(model: nn.Module, example: tuple, names: list[str], outputs: list[str], path: Path,
            dynamic: dict | None = None, opset: int = 17) -> Path:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), example, buffer, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    onnx.save(onnx.load_from_string(buffer.getvalue()), str(path))
    return path


def _normal(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _image(size: int = 32, channels: int = 3, batch: int = 1) -> Feed:
    return lambda seed: {"image": _normal((batch, channels, size, size), seed)}


def _torch_image_model(make: Callable[[], nn.Module], size: int = 32, batch_fixed: bool = False,
                       outputs: tuple[str, ...] = ("logits",), opset: int = 17) -> Callable[[Path], tuple[Path, Feed]]:
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        model = randomize(make(), 0)
        dynamic = None if batch_fixed else {"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
        path = _export(model, (torch.randn(1, 3, size, size),), ["image"], list(outputs), folder / "model.onnx",
                       dynamic, opset)
        return path, _image(size)
    return build


# -- CNN blocks ------------------------------------------------------------------------------------------------
def _cbr(cin, cout, k=3, s=1, groups=1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class MobileV3Block(nn.Module):
    """Inverted residual with squeeze-and-excitation and HardSwish (MobileNetV3)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(_cbr(cin, hidden, 1, act=nn.Hardswish),
                                  _cbr(hidden, hidden, 3, stride, groups=hidden, act=nn.Hardswish),
                                  SqueezeExcite(hidden), _cbr(hidden, cout, 1, act=None))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def _classifier(features: nn.Module, channels: int, classes: int = 10) -> nn.Module:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.fc = features, nn.Linear(channels, classes)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))
    return Head()


def mobilenetv3() -> nn.Module:
    return _classifier(nn.Sequential(_cbr(3, 16, 3, 2, act=nn.Hardswish), MobileV3Block(16, 16, 1),
                                     MobileV3Block(16, 24, 2), MobileV3Block(24, 24, 1), MobileV3Block(24, 40, 2),
                                     _cbr(40, 96, 1, act=nn.Hardswish)), 96)


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(cin, cout, 1), _cbr(cout, cout, 3, stride, groups=groups),
                                  _cbr(cout, cout, 1, act=None))
        self.short = _cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


def resnext() -> nn.Module:
    return _classifier(nn.Sequential(_cbr(3, 32, 3, 2), ResNeXtBlock(32, 32, 1), ResNeXtBlock(32, 64, 2),
                                     ResNeXtBlock(64, 64, 1)), 64)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: split channels, a depthwise branch, concat, channel shuffle (Reshape/Transpose)."""

    def __init__(self, c: int, fixed_batch: int | None) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(_cbr(half, half, 1), _cbr(half, half, 3, groups=half, act=None),
                                    _cbr(half, half, 1))
        self.fixed_batch = fixed_batch

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = y.shape
        batch = self.fixed_batch or n
        return y.reshape(batch, 2, c // 2, h, w).transpose(1, 2).reshape(batch, c, h, w)


def shufflenet(fixed_batch: int | None = None) -> nn.Module:
    return _classifier(nn.Sequential(_cbr(3, 48, 3, 2), ShuffleBlock(48, fixed_batch), ShuffleBlock(48, fixed_batch),
                                     _cbr(48, 64, 3, 2), ShuffleBlock(64, fixed_batch)), 64)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(),
                                                  nn.Conv2d(cin + i * growth, growth, 3, 1, 1, bias=False))
                                    for i in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


def densenet() -> nn.Module:
    return _classifier(nn.Sequential(_cbr(3, 16, 3, 2), DenseBlock(16, 8, 4), nn.Conv2d(48, 24, 1), nn.AvgPool2d(2),
                                     DenseBlock(24, 8, 4)), 56)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 7, 1, 3, groups=c), nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


def convnext() -> nn.Module:
    return _classifier(nn.Sequential(nn.Conv2d(3, 32, 4, 4), ConvNeXtBlock(32), ConvNeXtBlock(32),
                                     nn.Conv2d(32, 64, 2, 2), ConvNeXtBlock(64)), 64)


class SegNet(nn.Module):
    """Encoder, bilinear Resize back up, a skip concat, per-pixel classes (and ConvTranspose when asked)."""

    def __init__(self, transposed: bool = False) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3 = _cbr(3, 16, 3, 2), _cbr(16, 32, 3, 2), _cbr(32, 64, 3, 2)
        self.up = nn.ConvTranspose2d(64, 32, 2, 2) if transposed else None
        self.fuse = _cbr(64 if not transposed else 64, 32)
        self.head = nn.Conv2d(32, 5, 1)

    def forward(self, x):
        a = self.enc1(x)
        b = self.enc2(a)
        c = self.enc3(b)
        up = self.up(c) if self.up is not None else F.interpolate(c, size=b.shape[2:], mode="bilinear")[:, :32]
        y = self.head(self.fuse(torch.cat([up, b], 1)))
        return F.interpolate(y, scale_factor=4.0, mode="bilinear", align_corners=False)


class LegacySeg(nn.Module):
    """What an old exporter wrote: strided Conv/BatchNorm/ReLU, nearest Upsample, per-pixel class Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.head = _cbr(3, 16, 3, 2), _cbr(16, 32, 3, 2), nn.Conv2d(32, 5, 1)

    def forward(self, x):
        y = self.head(F.interpolate(self.enc2(self.enc1(x)), scale_factor=2.0, mode="nearest"))
        return torch.softmax(y, dim=1)


class TinyViT(nn.Module):
    """Patch embedding (Conv), a class token, attention blocks, LayerNorm, a head."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        self.blocks = nn.ModuleList(EncoderLayer(dim, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        for block in self.blocks:
            x = block(x, 0.0)
        return self.head(self.norm(x[:, 0]))


class TemporalConv(nn.Module):
    """A dilated 1-D temporal conv net over [batch, channels, time], dynamic time."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv1d(16 if i else 8, 16, 3, padding=2 ** i, dilation=2 ** i)
                                    for i in range(4))
        self.out = nn.Conv1d(16, 4, 1)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            y = F.relu(layer(x))
            x = y + x if i else y
        return self.out(x)


class TwoHeads(nn.Module):
    """A shared trunk with a class head and a box head: two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(_cbr(3, 16, 3, 2), _cbr(16, 32, 3, 2))
        self.cls, self.box = nn.Linear(32, 10), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        f = self.trunk(x)
        return self.cls(f.mean((2, 3))), self.box(f)


class YoloHead(nn.Module):
    """A YOLO-style detector: a SiLU trunk, then a 1x1 Conv per anchor whose sigmoid outputs are split into box
    centre, size and scores and decoded with a grid and anchor sizes in float arithmetic."""

    def __init__(self, anchors: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(_cbr(3, 16, 3, 2, act=nn.SiLU), _cbr(16, 32, 3, 2, act=nn.SiLU))
        self.anchors, self.outputs = anchors, 5 + classes
        self.head = nn.Conv2d(32, anchors * self.outputs, 1)
        ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys], -1).view(1, 1, 8, 8, 2))
        self.register_buffer("size", torch.tensor([[4.0, 6.0], [8.0, 12.0], [16.0, 10.0]]).view(1, anchors, 1, 1, 2))

    def forward(self, x):
        p = self.head(self.trunk(x))
        n, _, h, w = p.shape
        p = p.view(n, self.anchors, self.outputs, h, w).permute(0, 1, 3, 4, 2).sigmoid()
        xy, wh, scores = p.split((2, 2, self.outputs - 4), -1)
        xy = (xy * 2 - 0.5 + self.grid) * 4.0
        wh = (wh * 2) ** 2 * self.size
        return torch.cat((xy, wh, scores), -1).view(n, -1, self.outputs)


class OutlierMLP(nn.Module):
    """A 3-layer MLP whose inputs hold a few outlier channels (issue 11, item 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class OneHotClassifier(nn.Module):
    """int32 tokens -> one-hot floats (Equal, Cast) -> Conv1d -> two dense MatMuls (issue 11, item 1)."""

    def __init__(self, vocab: int = 32) -> None:
        super().__init__()
        self.vocab = vocab
        self.conv, self.fc1, self.fc2 = nn.Conv1d(vocab, 32, 3, padding=1), nn.Linear(32, 32), nn.Linear(32, 5)

    def forward(self, tokens):
        onehot = (tokens.long().unsqueeze(-1) == torch.arange(self.vocab)).float().transpose(1, 2)
        return self.fc2(F.relu(self.fc1(F.relu(self.conv(onehot)).mean(2))))


class EmbeddingClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc1, self.fc2 = nn.Embedding(500, 32), nn.Linear(32, 32), nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc2(F.relu(self.fc1(self.embed(ids).mean(1))))


class Recurrent(nn.Module):
    """LSTM or GRU, sequence-first, with explicit state inputs and outputs, and a Linear per frame."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(16, 32)
        self.fc, self.kind = nn.Linear(32, 8), kind

    def forward(self, x, h, *c):
        if self.kind == "lstm":
            y, (h, c0) = self.rnn(x, (h, c[0]))
            return self.fc(y), h, c0
        y, h = self.rnn(x, h)
        return self.fc(y), h


def _recurrent(kind: str) -> Callable[[Path], tuple[Path, Feed]]:
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        states = ["h", "c"] if kind == "lstm" else ["h"]
        example = (torch.randn(6, 1, 16), *[torch.zeros(1, 1, 32) for _ in states])
        path = _export(Recurrent(kind), example, ["x", *states], ["y", *[f"{s}_out" for s in states]],
                       folder / "model.onnx", {"x": {0: "T"}, "y": {0: "T"}})

        def feed(seed: int) -> dict[str, np.ndarray]:
            rng = np.random.default_rng(seed)
            return {"x": _normal((int(rng.integers(4, 12)), 1, 16), seed),
                    **{s: rng.uniform(-0.5, 0.5, (1, 1, 32)).astype(np.float32) for s in states}}
        return path, feed
    return build


def _tokens(name: str, dtype, vocab: int, length: int = 16) -> Feed:
    return lambda seed: {name: np.random.default_rng(seed).integers(0, vocab, (1, length)).astype(dtype)}


def _torch_model(make: Callable[[], nn.Module], example: tuple, names: list[str], outputs: list[str],
                 feed: Feed, dynamic: dict | None = None) -> Callable[[Path], tuple[Path, Feed]]:
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        return _export(randomize(make(), 0), example, names, outputs, folder / "model.onnx", dynamic), feed
    return build


def _outlier_feed(seed: int) -> dict[str, np.ndarray]:
    x = _normal((4, 32), seed)
    x[:, [3, 17]] *= 40.0
    return {"x": x}


def _dynamic_image(seed: int) -> dict[str, np.ndarray]:
    size = (24, 32, 40)[seed % 3]  # image sizes vary from call to call
    return {"image": _normal((1, 3, size, size), seed)}


# -- transformers ----------------------------------------------------------------------------------------------
class _Hidden(nn.Module):
    """Calls a transformers model by keyword and returns its last hidden state."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args):
        return self.model(**dict(zip(self.keys, args, strict=True))).last_hidden_state


def _text_feed(vocab: int = 100) -> Feed:
    def feed(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        length = int(rng.integers(8, 24))
        return {"input_ids": rng.integers(0, vocab, (1, length)).astype(np.int64),
                "attention_mask": np.ones((1, length), np.int64)}
    return feed


def _hf_text(make: Callable[[], nn.Module]) -> Callable[[Path], tuple[Path, Feed]]:
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        model = _Hidden(make(), ("input_ids", "attention_mask"))
        example = (torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long))
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "hidden": {0: "batch", 1: "seq"}}
        return _export(model, example, ["input_ids", "attention_mask"], ["hidden"], folder / "model.onnx",
                       axes), _text_feed()
    return build


def _hf_dynamo(make: Callable[[], nn.Module], opset: int) -> Callable[[Path], tuple[Path, Feed]]:
    """``make``'s text model exported by torch's default exporter (``dynamo=True``, onnxscript's rewrites), as a user
    exporting it today gets it: at opset 23 attention, RMSNorm and rotary embedding become the ONNX ops
    ``Attention``, ``RMSNormalization`` and ``RotaryEmbedding``; weights in one external data file."""
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        model = _Hidden(make(), ("input_ids", "attention_mask")).eval()
        example = (torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long))
        seq = torch.export.Dim("seq", min=2, max=64)
        path = folder / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["hidden"], opset_version=opset, dynamo=True, verbose=False,
                              dynamic_shapes={"args": ({1: seq}, {1: seq})})
        return path, _text_feed()
    return build


def _hf_single(make: Callable[[], nn.Module], key: str, shape: tuple, dynamic: dict | None = None):
    def build(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        path = _export(_Hidden(make(), (key,)), (torch.randn(*shape),), [key], ["hidden"], folder / "model.onnx",
                       dynamic)
        return path, lambda seed: {key: _normal(shape, seed)}
    return build


def _ort_optimized(build: Callable[[Path], tuple[Path, Feed]], heads: int, hidden: int):
    """``build``'s model after ONNX Runtime's transformer optimizer (in the onnxruntime wheel), as many users
    quantize it: its contrib ops (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu) are typed
    by no ONNX schema."""
    def optimized(folder: Path) -> tuple[Path, Feed]:
        from onnxruntime.transformers.optimizer import optimize_model

        path, feed = build(folder)
        optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(str(path))
        return path, feed
    return optimized


def _float16(build: Callable[[Path], tuple[Path, Feed]]):
    """``build``'s model in float16 by ONNX Runtime's converter (in the onnxruntime wheel), as users halve
    transformers: weights and activations float16, token ids as they were."""
    def halved(folder: Path) -> tuple[Path, Feed]:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        path, feed = build(folder)
        onnx.save(convert_float_to_float16(onnx.load(path)), path)
        return path, feed
    return halved


def _transformers() -> list[Entry]:
    import transformers as T

    small = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "hidden_size": 32,
             "attn_implementation": "eager"}
    text = {"vocab_size": 100, "max_position_embeddings": 64}
    return [
        Entry("hf-bert", "transformers BERT (GELU, LayerNorm, attention MatMuls)",
              _hf_text(lambda: T.BertModel(T.BertConfig(**small, **text)))),
        Entry("hf-bert-ort-optimized", "the BERT above after ONNX Runtime's transformer optimizer (contrib ops)",
              _ort_optimized(_hf_text(lambda: T.BertModel(T.BertConfig(**small, **text))), heads=2, hidden=32)),
        Entry("hf-bert-fp16", "the BERT above in float16 (ONNX Runtime's float16 converter)",
              _float16(_hf_text(lambda: T.BertModel(T.BertConfig(**small, **text))))),
        Entry("hf-distilbert", "transformers DistilBERT",
              _hf_text(lambda: T.DistilBertModel(T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                     attn_implementation="eager", **text)))),
        Entry("hf-gpt2", "transformers GPT-2 (causal mask, Conv1D as Gemm/MatMul)",
              _hf_text(lambda: T.GPT2Model(T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                                        n_positions=64, bos_token_id=0, eos_token_id=0,
                                                        attn_implementation="eager", use_cache=False)))),
        Entry("hf-t5-encoder", "transformers T5 encoder (RMSNorm, relative position bias)",
              _hf_text(lambda: T.T5EncoderModel(T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                                           vocab_size=100, attn_implementation="eager")))),
        Entry("hf-llama", "transformers Llama-style decoder (RMSNorm, rotary, SiLU gate, GQA)",
              _hf_text(lambda: T.LlamaModel(T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                          num_attention_heads=2, num_key_value_heads=1,
                                                          attn_implementation="eager", use_cache=False, **text)))),
        Entry("hf-llama-dynamo", "the Llama-style decoder by torch's default (dynamo) exporter at opset 23 "
              "(Attention, RMSNormalization, RotaryEmbedding ops)",
              _hf_dynamo(lambda: T.LlamaModel(T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                            num_attention_heads=2, num_key_value_heads=1,
                                                            use_cache=False, **text)), opset=23)),
        Entry("hf-bert-dynamo", "the BERT by torch's default (dynamo) exporter at opset 18",
              _hf_dynamo(lambda: T.BertModel(T.BertConfig(**small, **text)), opset=18)),
        Entry("hf-vit", "transformers ViT (patch Conv, class token)",
              _hf_single(lambda: T.ViTModel(T.ViTConfig(**small, image_size=32, patch_size=8)), "pixel_values",
                         (1, 3, 32, 32))),
        Entry("hf-whisper-encoder", "transformers Whisper encoder (Conv1d front end, GELU)",
              _hf_single(lambda: T.WhisperModel(T.WhisperConfig(
                  d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
                  encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=50, vocab_size=100,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                  attn_implementation="eager")).get_encoder(), "input_features", (1, 16, 100))),
        Entry("hf-wav2vec2", "transformers Wav2Vec2 (raw audio Conv1d stack, GroupNorm, positional conv)",
              _hf_single(lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(
                  **small, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4)), "input_values", (1, 1600), {"input_values": {1: "samples"}})),
    ]


# -- control flow (onnx.helper) ----------------------------------------------------------------------------------
def _weights(rng, **shapes) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _flow_feed(seed: int) -> dict[str, np.ndarray]:
    return {"x": _normal((4, 16), seed)}


def _einsum_model(folder: Path) -> tuple[Path, Feed]:
    """Dense layers as a JAX or TensorFlow export writes them: Einsum bsd,df->bsf, then a kernel stored fo."""
    rng = np.random.default_rng(3)
    v = helper.make_tensor_value_info
    nodes = [helper.make_node("Einsum", ["x", "W1"], ["h"], name="dense1", equation="bsd,df->bsf"),
             helper.make_node("Tanh", ["h"], ["t"], name="tanh"),
             helper.make_node("Einsum", ["t", "W2"], ["y"], name="dense2", equation="bsf,of->bso")]
    graph = helper.make_graph(nodes, "einsum_dense", [v("x", TensorProto.FLOAT, ["batch", 8, 16])],
                              [v("y", TensorProto.FLOAT, ["batch", 8, 4])], _weights(rng, W1=(16, 32), W2=(4, 32)))
    return _save(graph, folder / "model.onnx"), lambda seed: {"x": _normal((1, 8, 16), seed)}


def _if_model(folder: Path) -> tuple[Path, Feed]:
    """MatMul, then If (on the sign of the mean) with a MatMul in each branch, then a MatMul."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    branch = {name: helper.make_graph([helper.make_node("MatMul", ["a", w], [f"{name}_out"]),
                                       helper.make_node("Relu", [f"{name}_out"], [f"{name}_y"])], name, [],
                                      [v(f"{name}_y", TensorProto.FLOAT, None)])
              for name, w in (("then", "Wt"), ("else", "We"))}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("ReduceMean", ["a"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["b"], then_branch=branch["then"], else_branch=branch["else"]),
             helper.make_node("MatMul", ["b", "W2"], ["y"])]
    init = _weights(rng, W1=(16, 32), Wt=(32, 32), We=(32, 32), W2=(32, 8))
    init.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    graph = helper.make_graph(nodes, "if_model", [v("x", TensorProto.FLOAT, ["batch", 16])],
                              [v("y", TensorProto.FLOAT, ["batch", 8])], init)
    return _save(graph, folder / "model.onnx"), _flow_feed


def _loop_model(folder: Path) -> tuple[Path, Feed]:
    """MatMul, a Loop of 3 trips whose body applies MatMul + Tanh to the carried state, then a MatMul."""
    rng = np.random.default_rng(1)
    v = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "Wb"], ["t"]), helper.make_node("Tanh", ["t"], ["s_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [v("i", TensorProto.INT64, []), v("cond_in", TensorProto.BOOL, []), v("s_in", TensorProto.FLOAT, None)],
        [v("cond_out", TensorProto.BOOL, []), v("s_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]),
             helper.make_node("Loop", ["trips", "true", "a"], ["b"], body=body),
             helper.make_node("MatMul", ["b", "W2"], ["y"])]
    init = _weights(rng, W1=(16, 32), Wb=(32, 32), W2=(32, 8))
    init += [numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "true")]
    graph = helper.make_graph(nodes, "loop_model", [v("x", TensorProto.FLOAT, ["batch", 16])],
                              [v("y", TensorProto.FLOAT, ["batch", 8])], init)
    return _save(graph, folder / "model.onnx"), _flow_feed


def _scan_model(folder: Path) -> tuple[Path, Feed]:
    """MatMul over frames, a Scan over them (a simple RNN body: MatMul, Add, Tanh), then a MatMul on the outputs."""
    rng = np.random.default_rng(2)
    v = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "U"], ["hu"]), helper.make_node("Add", ["hu", "frame"], ["s"]),
         helper.make_node("Tanh", ["s"], ["h_out"]), helper.make_node("Identity", ["h_out"], ["out"])], "body",
        [v("h_in", TensorProto.FLOAT, [1, 32]), v("frame", TensorProto.FLOAT, [1, 32])],
        [v("h_out", TensorProto.FLOAT, [1, 32]), v("out", TensorProto.FLOAT, [1, 32])])
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("Unsqueeze", ["a", "one"], ["frames"]),
             helper.make_node("Scan", ["h0", "frames"], ["h_last", "hs"], body=body, num_scan_inputs=1),
             helper.make_node("Squeeze", ["hs", "one"], ["seq"]), helper.make_node("MatMul", ["seq", "W2"], ["y"])]
    init = _weights(rng, W1=(16, 32), U=(32, 32), W2=(32, 8))
    init += [numpy_helper.from_array(np.zeros((1, 32), np.float32), "h0"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(nodes, "scan_model", [v("x", TensorProto.FLOAT, ["T", 16])],
                              [v("y", TensorProto.FLOAT, ["T", 8])], init)
    return _save(graph, folder / "model.onnx"), _flow_feed


def _recurrent_step(folder: Path) -> tuple[Path, Feed]:
    from qtool.testing.feed_models import recurrent_feed, recurrent_step_model

    return Path(recurrent_step_model(folder / "model.onnx")), recurrent_feed


def _multi_input(folder: Path) -> tuple[Path, Feed]:
    class Fusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.meta, self.fc = _cbr(3, 16, 3, 2), nn.Linear(8, 16), nn.Linear(32, 4)

        def forward(self, image, meta):
            return self.fc(torch.cat([self.conv(image).mean((2, 3)), F.relu(self.meta(meta))], 1))
    torch.manual_seed(0)
    path = _export(randomize(Fusion(), 0), (torch.randn(1, 3, 32, 32), torch.randn(1, 8)), ["image", "meta"],
                   ["logits"], folder / "model.onnx", {"image": {0: "batch"}, "meta": {0: "batch"}})
    return path, lambda seed: {"image": _normal((1, 3, 32, 32), seed), "meta": _normal((1, 8), seed + 1000)}


def _zoo() -> list[Entry]:
    import zoo_sequence  # it builds on this module's helpers

    image = _torch_image_model
    entries = [
        Entry("resnet18-w8", "residual (ResNet-18 shape, width 8)", image(lambda: ResNet18(8, 10))),
        Entry("mobilenetv2-w0.25", "inverted residual, depthwise, ReLU6", image(lambda: MobileNetV2(0.25, 10))),
        Entry("mobilenetv3-mini", "inverted residual with SE and HardSwish", image(mobilenetv3)),
        Entry("resnext-mini", "grouped conv (ResNeXt)", image(resnext)),
        Entry("shufflenet-mini", "channel split, concat, shuffle (Reshape/Transpose)", image(shufflenet)),
        Entry("shufflenet-batch1", "channel shuffle with the batch of 1 baked into the Reshape",
              image(lambda: shufflenet(fixed_batch=1), batch_fixed=True)),
        Entry("densenet-mini", "dense concat", image(densenet)),
        Entry("convnext-mini", "ConvNeXt blocks: depthwise 7x7, LayerNorm, GELU, layer scale", image(convnext)),
        Entry("segnet-resize", "segmentation with bilinear Resize and a skip concat",
              image(SegNet, outputs=("mask",))),
        Entry("unet-convtranspose", "segmentation with ConvTranspose upsampling",
              image(lambda: SegNet(transposed=True), outputs=("mask",))),
        Entry("legacy-opset9", "opset 9 (Upsample, a channel Softmax): the export converts it to opset 13",
              image(LegacySeg, outputs=("mask",), opset=9)),
        Entry("vit-mini", "ViT: patch Conv, class token, attention (torch)", image(TinyViT)),
        Entry("tcn-1d", "1-D temporal conv, dilated, dynamic time",
              _torch_model(TemporalConv, (torch.randn(1, 8, 50),), ["signal"], ["out"],
                           lambda s: {"signal": _normal((1, 8, 30 + 10 * (s % 4)), s)},
                           {"signal": {0: "batch", 2: "time"}, "out": {0: "batch", 2: "time"}})),
        Entry("two-heads", "several outputs (class logits, box map)", image(TwoHeads, outputs=("logits", "boxes"))),
        Entry("yolo-head", "YOLO-style detector: SiLU trunk, sigmoid head split and decoded in float",
              image(YoloHead, outputs=("detections",))),
        Entry("dynamic-image", "dynamic height and width; calibration images of several sizes",
              _torch_model(lambda: _classifier(nn.Sequential(_cbr(3, 16, 3, 2), _cbr(16, 32, 3, 2)), 32),
                           (torch.randn(1, 3, 32, 32),), ["image"], ["logits"], _dynamic_image,
                           {"image": {0: "batch", 2: "height", 3: "width"}})),
        Entry("multi-input", "two inputs (image and metadata vector) fused", _multi_input),
        Entry("mlp-outliers", "3-layer MLP with outlier input channels",
              _torch_model(OutlierMLP, (torch.randn(4, 32),), ["x"], ["y"], _outlier_feed, {"x": {0: "batch"}})),
        Entry("onehot-conv", "int32 tokens -> one-hot (Equal, Cast) -> Conv1d -> MatMuls",
              _torch_model(OneHotClassifier, (torch.zeros(1, 20, dtype=torch.int32),), ["tokens"], ["logits"],
                           _tokens("tokens", np.int32, 32, 20), {"tokens": {0: "batch", 1: "seq"}})),
        Entry("embedding-mlp", "embedding (Gather on int64 ids) -> MatMuls",
              _torch_model(EmbeddingClassifier, (torch.zeros(1, 16, dtype=torch.int64),), ["ids"], ["logits"],
                           _tokens("ids", np.int64, 500), {"ids": {0: "batch", 1: "seq"}})),
        Entry("lstm-state", "LSTM, sequence-first [T, 1, F], state inputs h, c [1, 1, H]", _recurrent("lstm")),
        Entry("gru-state", "GRU, sequence-first, state input h [1, 1, H]", _recurrent("gru")),
        Entry("recurrent-step", "recurrent step of plain ops, x [T, F], state h, c [1, 1, H]", _recurrent_step),
        Entry("einsum-dense", "dense layers as Einsum (bsd,df->bsf), as JAX and TensorFlow export them", _einsum_model),
        Entry("if-branches", "If with a MatMul in each branch", _if_model),
        Entry("loop-body", "Loop carrying a state through MatMul + Tanh", _loop_model),
        Entry("scan-rnn", "Scan over frames with a MatMul RNN body", _scan_model),
    ]
    return entries + _transformers() + zoo_sequence.entries()


def _full_size() -> list[Entry]:
    """Models of a real deployment's size (random weights): costs that grow with the weights and activations show
    here, not on the small models."""
    import transformers as T

    def bert_base(folder: Path) -> tuple[Path, Feed]:
        torch.manual_seed(0)
        model = _Hidden(T.BertModel(T.BertConfig(attn_implementation="eager")), ("input_ids", "attention_mask"))
        example = (torch.randint(0, 30522, (1, 128)), torch.ones(1, 128, dtype=torch.long))
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "hidden": {0: "batch", 1: "seq"}}
        path = _export(model, example, ["input_ids", "attention_mask"], ["hidden"], folder / "model.onnx", axes)

        def feed(seed: int) -> dict[str, np.ndarray]:
            ids = np.random.default_rng(seed).integers(0, 30522, (1, 128)).astype(np.int64)
            return {"input_ids": ids, "attention_mask": np.ones((1, 128), np.int64)}
        return path, feed

    return [
        Entry("resnet50", "ResNet-50 at 224x224 (25M parameters)", _torch_image_model(ResNet50, size=224)),
        Entry("bert-base", "BERT-base encoder, 128 tokens (110M parameters, 12 layers)", bert_base),
    ]


def _trained(name: str, description: str) -> Entry:
    def build(folder: Path) -> tuple[Path, Feed]:
        import accuracy_models

        module = accuracy_models.load(name)
        path = module.build(folder)
        samples = module.calibration_data(24)
        return path, lambda seed: samples[seed % len(samples)]
    return Entry(f"trained-{name}", description, build)


def entries() -> list[Entry]:
    """Every zoo model: the small ones, two of a real deployment's size, the real trained ones of bench/accuracy.py
    last."""
    import accuracy_models

    return _zoo() + _full_size() + [_trained(name, text) for name, text in accuracy_models.MODELS.items()]
