"""docs/configuration.md documents every key, preset, reset and alignment group the schema has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from qtool.config import PRESET_DOCS, PRESETS, resolve_config
from qtool.config.schema import ALIGNMENT_GROUPS, SCHEME_KEYS, reference_tables

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
TEXT = DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("table", reference_tables(), ids=lambda t: t.title)
def test_every_key_is_documented_with_type_default_and_meaning(table):
    assert f"### {table.title}\n" in TEXT
    missing = [row for row in table.rows() if row not in TEXT]
    assert not missing, "regenerate with qtool.config.schema.reference_markdown(); stale rows:\n" + "\n".join(missing)


def test_every_preset_is_documented():
    assert set(PRESET_DOCS) == set(PRESETS)
    for name, doc in PRESET_DOCS.items():
        assert f"| `{name}` | {doc} |" in TEXT


def test_the_resets_table_matches_the_schema():
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, key in SCHEME_KEYS.items():
        if key.resets:
            groups.setdefault(key.resets, []).append(name)
    for resets, names in groups.items():
        row = f"| {', '.join(f'`{n}`' for n in names)} | {', '.join(f'`{r}`' for r in resets)} |"
        assert row in TEXT


def test_alignment_groups_are_documented():
    for group, types in ALIGNMENT_GROUPS.items():
        assert f"| `{group}` | {', '.join(types)} |" in TEXT


EXAMPLES = re.findall(r"```(toml|yaml)\n(.*?)```", TEXT, flags=re.S)


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_every_example_resolves(index, tmp_path):
    language, body = EXAMPLES[index]
    path = tmp_path / f"example.{language}"
    path.write_text(body)
    assert resolve_config({}, path) is not None


def test_examples_are_found():
    assert [lang for lang, _ in EXAMPLES] == ["toml", "toml", "toml", "toml", "toml", "toml", "yaml", "toml"]
    assert yaml.safe_load(EXAMPLES[6][1])["activation"]["bits"] == 16


def test_the_int16_example_gives_the_a16w8_activations_on_onnxruntime(tmp_path):
    from qtool.platform import get_platform

    path = tmp_path / "example.yaml"
    path.write_text(EXAMPLES[6][1])
    defaults = get_platform("onnxruntime").default_config()
    assert resolve_config(defaults, path).activation == resolve_config(defaults, preset="a16w8").activation
