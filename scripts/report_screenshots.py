"""Screenshots of the demo CNN's report for docs/report.md (docs/images/report-*.png).

    python scripts/report_screenshots.py     # trains the demo CNN (seconds), analyses it, shoots each section
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import qtool
from qtool.testing.browser import load

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import digits_model  # noqa: E402

SECTIONS = ("summary", "errors", "layers", "dispatch")
CONFIG = {"accuracy": {"fallback": {"min_snr_db": 48.0, "outlier_ratio": None, "op_types": None}}}


def main() -> int:
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, split = digits_model.build(folder)
        np.savez(folder / "calib.npz", image=split.calib_x)
        page = folder / "report.html"
        qtool.analyse(model, "onnxruntime-int32bias", folder / "calib.npz", config=CONFIG, samples=4).to_html(page)
        page.write_text(page.read_text().replace(str(folder), "out/demo"))
        for section in SECTIONS:
            shot = folder / f"{section}.png"
            anchored = folder / f"{section}.html"
            scroll = (f"<script>const wait = setInterval(() => {{ if (document.body.dataset.charts) {{ "
                      f"clearInterval(wait); document.getElementById('{section}').scrollIntoView(); }} }}, 50);"
                      "</script></body>")
            head, _, tail = page.read_text().rpartition("</body>")
            anchored.write_text(head + scroll + tail)
            load(anchored, screenshot=shot, size=(1280, 900))
            image = Image.open(shot).convert("RGB").quantize(colors=64)
            image.save(images / f"report-{section}.png", optimize=True)
            print(images / f"report-{section}.png", (images / f"report-{section}.png").stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
