"""docs/writing-a-plugin.md ends in a working package: its steps, applied to a fresh skeleton, pass."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from qtool.cli.new_plugin import new_plugin

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-plugin.md"


def _block(blocks, marker):
    (found,) = [b for b in blocks if marker in b]
    return found


def _apply_tutorial(root: Path) -> None:
    """Step 4 and 5 of the tutorial, as written there."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    step4 = _block(blocks, 'writer.writerow(["tensor"')
    platform = root / "src/qtool_acme_npu/platform.py"
    text = platform.read_text().replace("import json\n", step4[:step4.index("...")].strip() + "\n")
    start, end = text.index("    def validate(self"), text.index("def _supported")
    platform.write_text(text[:start] + step4[step4.index("    def validate"):] + "\n\n" + text[end:])
    contract = root / "tests/test_qtool_acme_npu_contract.py"
    text = contract.read_text()
    kept = text[:text.index("def test_export_lists_every_quantized_tensor")]
    contract.write_text(kept.replace("import json\n\n", ""))
    (root / "tests/test_qtool_acme_npu_csv.py").write_text(_block(blocks, "def test_csv_has_every_tensor"))


@pytest.mark.slow
def test_tutorial_ends_in_a_passing_package(tmp_path):
    root = new_plugin("acme-npu", tmp_path)
    _apply_tutorial(root)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(root)], check=True, capture_output=True, timeout=300)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                           timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "9 passed" in tests.stdout  # the doc says so
    assert "9 passed" in DOC.read_text()
