"""Plugins and contrib import only qtool's public API: ``qtool``, ``qtool.quant`` and ``qtool.ops``."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import qtool

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = frozenset({"qtool", "qtool.quant", "qtool.ops"})


def _sources() -> list[Path]:
    """Every plugin and contrib source file (their tests may use qtool's internals)."""
    return sorted(p for folder in ("plugins", "contrib") for p in (ROOT / folder).glob("*/src/**/*.py"))


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "qtool" else []
            names += [f"qtool.{a.name}" for a in node.names if node.module == "qtool"
                      and importlib.util.find_spec(f"qtool.{a.name}") is not None]  # a submodule, not a name
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno} imports {name}" for name in names
                  if (name == "qtool" or name.startswith("qtool.")) and name not in PUBLIC_MODULES]
    return found


def test_plugins_and_contrib_import_only_the_public_api():
    sources = _sources()
    assert len(sources) > 20  # the three plugins and contrib were found
    assert [problem for path in sources for problem in _private_imports(path)] == []


def test_the_public_names_exist():
    missing = [name for name in qtool.__all__ if not hasattr(qtool, name)]
    assert missing == []
    for name in ("ExportOptionError", "save_model_proto", "to_model_proto", "round_array", "PROTO_LIMIT",
                 "QuantizeResult", "sites", "Site"):
        assert name in qtool.__all__


def test_attribute_access_to_private_modules_is_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from qtool.ir.onnx_export import save_model_proto\nimport qtool.passes\nfrom qtool import ir\n")
    found = _private_imports(bad, tmp_path)
    assert [line.split(" imports ")[1] for line in found] == ["qtool.ir.onnx_export", "qtool.passes", "qtool.ir"]
