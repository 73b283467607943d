"""Screenshots of the demo CNN's report for docs/report.md (docs/images/report-*.png).

    python scripts/report_screenshots.py     # trains the demo CNN (seconds), analyses it, shoots each section
"""

from __future__ import annotations

import html
import json
import re
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
        head, _, tail = page.read_text().rpartition("</body>")
        measure = ("<script>const wait = setInterval(() => { if (document.body.dataset.charts) { clearInterval(wait); "
                   "document.body.dataset.sections = JSON.stringify(Object.fromEntries([...document.querySelectorAll("
                   "'section')].map((s) => [s.id, [s.offsetTop, s.offsetHeight]]))); } }, 50);</script></body>")
        page.write_text(head + measure + tail)
        found = re.search(r'data-sections="([^"]*)"', load(page).dom).group(1)
        sections = json.loads(html.unescape(found))
        bottom = max(top + height for top, height in sections.values()) + 20
        shot = folder / "page.png"
        load(page, screenshot=shot, size=(1280, bottom))
        whole = Image.open(shot).convert("RGB")
        for section in SECTIONS:
            top, height = sections[section]
            crop = whole.crop((0, max(top - 8, 0), 1280, top + min(height, 1100) + 8))
            target = images / f"report-{section}.png"
            crop.quantize(colors=64).save(target, optimize=True)
            print(target, target.stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
