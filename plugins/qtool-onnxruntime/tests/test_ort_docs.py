"""docs/platforms/onnxruntime.md documents every diagnostic code and both platforms."""

from __future__ import annotations

from pathlib import Path

import pytest
from qtool_onnxruntime.codes import CODES

DOC = Path(__file__).resolve().parents[3] / "docs" / "platforms" / "onnxruntime.md"


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_is_documented_with_its_severity(code):
    rows = [line for line in DOC.read_text().splitlines() if line.startswith(f"| `{code}` |")]
    assert len(rows) == 1, f"{code} has no row in {DOC.name}"
    assert f"| {CODES[code][0].value} |" in rows[0]


def test_both_platforms_are_named():
    text = DOC.read_text()
    assert "`onnxruntime`" in text and "`onnxruntime-int32bias`" in text
