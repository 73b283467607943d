"""PP-OCRv4 text detection (DBNet, the model inside rapidocr_onnxruntime) on pages rendered with Pillow."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import SessionLike, copy_from_wheel, session
from .ocr import _FONTS, _font, _words

SOURCE = (
    "PP-OCRv4 text detection (ch_PP-OCRv4_det_infer.onnx: a PP-LCNetV3 backbone, an FPN-style neck with Resize and "
    "ConvTranspose, a DBNet probability head), shipped inside the PyPI wheel rapidocr_onnxruntime 1.4.4 at "
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx, Apache-2.0 (PaddleOCR's model, converted by RapidAI). "
    "Data: 480x480 pages of text lines (words of the Zen of Python and numbers) rendered with Pillow in the DejaVu "
    "and STIX fonts of matplotlib's wheel at random sizes, positions, colours, blur and noise; the ground truth is "
    "each rendered line's ink box grown by 20% of its height on every side (annotation margin). Post-processing "
    "follows rapidocr's DB defaults (threshold 0.3, 2x2 dilation, box score 0.5, unclip ratio 1.6) on axis-aligned "
    "boxes; the metric is the F1 of greedy one-to-one matching averaged over IoU thresholds 0.50, 0.55 ... 0.95 "
    "(COCO-style), so that it sees box quality, not only presence. Calibration pages come from seed 1, evaluation "
    "pages from seed 0 (60 pages); no evaluation page is used for calibration."
)
METRIC = "detection F1, mean over IoU 0.50:0.95"
_THRESHOLDS = np.arange(0.5, 0.96, 0.05)
_MARGIN = 0.2  # ground-truth boxes: the ink box grown by this share of the line's height on every side
INPUT = "x"
SIZE = 480
_EVAL_PAGES = 60


def build(workdir: Path) -> Path:
    """Copy the model out of the installed wheel."""
    return copy_from_wheel(workdir, "ppocrv4_det.onnx", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")


def _page(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One page as the model's input [3, 480, 480] and its line boxes [k, 4] (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw, ImageFilter

    words = _words()
    background = rng.integers(150, 256, 3)
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(image)
    boxes = []
    y = int(rng.integers(4, 40))
    while True:
        font = _font(_FONTS[rng.integers(len(_FONTS))], int(rng.integers(14, 40)))
        count = int(rng.integers(1, 5))
        text = " ".join(str(rng.integers(0, 1000)) if rng.random() < 0.15 else words[rng.integers(len(words))]
                        for _ in range(count))
        left, top, right, bottom = font.getbbox(text)
        if right - left > SIZE - 16:
            continue
        if y + bottom - top > SIZE - 4:
            break
        x = int(rng.integers(4, SIZE - (right - left) - 4))
        ink = np.minimum(rng.integers(0, 110, 3), background - 60)
        draw.text((x - left, y - top), text, font=font, fill=tuple(int(v) for v in ink))
        boxes.append((x, y, x + right - left, y + bottom - top))
        y += bottom - top + int(rng.integers(8, 40))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = np.clip(pixels + rng.normal(0.0, rng.uniform(2.0, 14.0), pixels.shape), 0, 255)
    x = (pixels[:, :, ::-1].transpose(2, 0, 1) / 255.0 - 0.5) / 0.5  # BGR, as rapidocr reads with OpenCV
    return x.astype(np.float32), np.array(boxes, np.float32).reshape(-1, 4)


@lru_cache(maxsize=2)
def _pages(seed: int, n: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    images, boxes = zip(*(_page(rng) for _ in range(n)), strict=True)
    return np.stack(images), boxes


def calibration_data(n: int = 64) -> list[dict[str, np.ndarray]]:
    """``n`` rendered pages from seed 1 (evaluation uses seed 0), one [1, 3, 480, 480] sample each."""
    images, _ = _pages(1, n)
    return [{INPUT: images[i:i + 1]} for i in range(n)]


def detect(probability: np.ndarray) -> np.ndarray:
    """DB post-processing on one [H, W] probability map: boxes [k, 4] of the text regions."""
    from scipy import ndimage

    bitmap = ndimage.binary_dilation(probability > 0.3, structure=np.ones((2, 2), bool))
    labels, count = ndimage.label(bitmap, structure=np.ones((3, 3), bool))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), 1):
        if found is None:
            continue
        ys, xs = found
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < 3 or probability[ys, xs][labels[ys, xs] == index].mean() < 0.5:
            continue
        grow = (h * w) * 1.6 / (2 * (h + w))  # unclip: area * ratio / perimeter
        boxes.append((xs.start - grow, ys.start - grow, xs.stop + grow, ys.stop + grow))
    return np.array(boxes, np.float32).reshape(-1, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area_b[None, :] - inter)


def _matches(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> int:
    """Greedy one-to-one matching, best IoU first, at IoU >= ``threshold``."""
    if not len(predicted) or not len(truth):
        return 0
    iou = _iou(predicted, truth)
    matched = 0
    while iou.max() >= threshold:
        i, j = np.unravel_index(iou.argmax(), iou.shape)
        matched += 1
        iou[i, :] = 0
        iou[:, j] = 0
    return matched


def evaluate(model: SessionLike, limit: int | None = None) -> float:
    """F1 of the detected line boxes against the rendered ones, averaged over IoU thresholds 0.50, 0.55 ... 0.95."""
    sess = session(model)
    images, truths = _pages(0, _EVAL_PAGES)
    if limit:
        images, truths = images[:limit], truths[:limit]
    matched = np.zeros(len(_THRESHOLDS))
    predicted_total = truth_total = 0
    for image, truth in zip(images, truths, strict=True):
        predicted = detect(sess.run(None, {INPUT: image[None]})[0][0, 0])
        grow = (truth[:, 3:4] - truth[:, 1:2]) * _MARGIN
        truth = truth + np.concatenate([-grow, -grow, grow, grow], axis=1)
        matched += [_matches(predicted, truth, t) for t in _THRESHOLDS]
        predicted_total += len(predicted)
        truth_total += len(truth)
    return float(np.mean(2 * matched / max(predicted_total + truth_total, 1)))
