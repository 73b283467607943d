"""PP-OCRv4 text recognition (the model inside rapidocr_onnxruntime) on text lines rendered with Pillow."""

from __future__ import annotations

import codecs
import contextlib
import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import SessionLike, copy_from_wheel, edit_distance, package_file, session

SOURCE = (
    "PP-OCRv4 recognition (ch_PP-OCRv4_rec_infer.onnx: a PP-LCNetV3 convolutional backbone and an SVTR transformer "
    "neck, CTC head over 6625 classes; Chinese and Latin text), shipped inside the PyPI wheel rapidocr_onnxruntime "
    "1.4.4 at rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx, Apache-2.0 (PaddleOCR's model, converted by "
    "RapidAI). The character table is the model's own 'character' metadata. Data: text lines made of words from the "
    "Zen of Python (CPython's `this` module) and numbers, rendered with Pillow in the DejaVu and STIX fonts that ship"
    " in matplotlib's wheel (DejaVu licence, SIL OFL), random size (11-35 px, then scaled to the model's 48 px "
    "height), colours and contrast, offset, blur and noise. Calibration lines come from seed 1, evaluation lines from"
    " seed 0 (200 lines); the images differ and no evaluation image is used for calibration."
)
METRIC = "character accuracy (1 - edit distance / length)"
INPUT = "x"
HEIGHT, WIDTH = 48, 320
_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
          "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf")
_EVAL_LINES = 200


def build(workdir: Path) -> Path:
    """Copy the model out of the installed wheel."""
    return copy_from_wheel(workdir, "ppocrv4_rec.onnx", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")


@lru_cache(maxsize=1)
def _characters() -> list[str]:
    import onnxruntime as ort

    model = package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    meta = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).get_modelmeta()
    return ["<blank>"] + meta.custom_metadata_map["character"].splitlines() + [" "]


@lru_cache(maxsize=1)
def _words() -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this

    zen = codecs.decode(this.s, "rot13")
    words = {w.strip(".,!*-'()") for w in zen.split()}
    return sorted(w for w in words if w.isalpha())


@lru_cache(maxsize=256)
def _font(name: str, size: int):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / name), size)


def _text(rng: np.random.Generator) -> str:
    words = _words()
    parts = []
    for _ in range(rng.integers(2, 5)):
        if rng.random() < 0.2:
            parts.append(str(rng.integers(0, 10 ** int(rng.integers(1, 5)))))
        else:
            word = words[rng.integers(len(words))]
            parts.append(word.capitalize() if rng.random() < 0.3 else word)
    text = " ".join(parts)
    return text[:22].strip()


def _render(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One text line as the model's input [3, 48, 320] (BGR, scaled to [-1, 1], right-padded with 0)."""
    from PIL import Image, ImageDraw, ImageFilter

    text = _text(rng)
    font = _font(_FONTS[rng.integers(len(_FONTS))], int(rng.integers(11, 36)))
    background = rng.integers(110, 256, 3)
    ink = np.minimum(rng.integers(0, 120, 3), background - 50)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = int(rng.integers(1, 10)), int(rng.integers(1, 8))
    image = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), tuple(int(v) for v in background))
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=font, fill=tuple(int(v) for v in ink))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.0))))
    width = min(WIDTH, max(1, round(image.width * HEIGHT / image.height)))
    pixels = np.asarray(image.resize((width, HEIGHT), Image.BILINEAR), dtype=np.float32)
    pixels = np.clip(pixels + rng.normal(0.0, rng.uniform(2.0, 24.0), pixels.shape), 0, 255)
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :width] = (pixels[:, :, ::-1].transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out, text


@lru_cache(maxsize=2)
def _lines(seed: int, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    images, texts = zip(*(_render(rng) for _ in range(n)), strict=True)
    return np.stack(images), texts


def calibration_data(n: int = 64) -> list[dict[str, np.ndarray]]:
    """``n`` rendered lines from seed 1 (evaluation uses seed 0), one [1, 3, 48, 320] sample each."""
    images, _ = _lines(1, n)
    return [{INPUT: images[i:i + 1]} for i in range(n)]


def decode(probabilities: np.ndarray) -> list[str]:
    """Greedy CTC decoding: argmax, merge repeats, drop blanks."""
    characters = _characters()
    out = []
    for best in probabilities.argmax(-1):
        keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != 0)
        out.append(" ".join("".join(characters[i] for i in best[keep]).split()))
    return out


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """Character accuracy over the evaluation lines: 1 - total edit distance / total characters."""
    sess = session(model)
    images, texts = _lines(0, _EVAL_LINES)
    if limit:
        images, texts = images[:limit], texts[:limit]
    predicted: list[str] = []
    for i in range(0, len(images), 16):
        predicted += decode(sess.run(None, {INPUT: images[i:i + 16]})[0])
    errors = sum(edit_distance(p, t) for p, t in zip(predicted, texts, strict=True))
    return 1.0 - errors / sum(len(t) for t in texts)
