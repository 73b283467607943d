"""Every module and source path the docs name exists: `qtool.x.y` modules (or names in them) and repo paths."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
DOTTED = re.compile(r"\b(qtool(?:_[a-z]+)?(?:\.[A-Za-z_]\w*)+)")
SOURCE = re.compile(r"(?<![\w/-])((?:core|plugins|contrib|bench|examples)/[\w./<>*-]+\.(?:py|toml|md))")


def _resolves(dotted: str) -> bool:
    """A module, or a name reached from the longest importable module prefix (``qtool.quant.plan.sites``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            target = importlib.import_module(module)
            for name in parts[cut:]:
                if not hasattr(target, name):
                    return False
                target = getattr(target, name)
            return True
    return False


def _named(pattern: re.Pattern) -> list[tuple[str, str]]:
    return sorted({(doc.name, m.group(1).rstrip(".")) for doc in DOCS
                   for m in pattern.finditer(doc.read_text(encoding="utf-8"))})


def test_every_module_the_docs_name_exists():
    named = _named(DOTTED)
    assert len(named) > 10
    assert [f"{doc}: {dotted}" for doc, dotted in named if not _resolves(dotted)] == []


def test_every_source_path_the_docs_name_exists():
    named = [(doc, path) for doc, path in _named(SOURCE) if not re.search(r"[<>*]", path)]
    assert [f"{doc}: {path}" for doc, path in named if not (ROOT / path).exists()] == []


def test_a_gone_module_is_caught():
    assert not _resolves("qtool.passes.accuracy.originals.float_values")
    assert _resolves("qtool.quant.plan") and _resolves("qtool.quant.plan.sites")
