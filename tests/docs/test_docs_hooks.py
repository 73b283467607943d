"""The hook documentation stays in step with hookspecs.py."""

import inspect
import re
from pathlib import Path

import pytest

from qtool.plugins import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOOKS = sorted(
    (name, fn) for name, fn in vars(hookspecs).items()
    if name.startswith("qtool_") and callable(fn)
)


def test_there_are_hooks():
    assert len(HOOKS) >= 5


@pytest.mark.parametrize("name, fn", HOOKS, ids=[h[0] for h in HOOKS])
def test_every_hook_has_a_heading_with_its_arguments(name, fn):
    text = (DOCS / "plugin-hooks.md").read_text()
    arguments = ", ".join(inspect.signature(fn).parameters)
    assert re.search(rf"^## {re.escape(name)}\({re.escape(arguments)}\)$", text, re.MULTILINE), (
        f"docs/plugin-hooks.md needs a heading '## {name}({arguments})'"
    )
    assert fn.__doc__, f"{name} has no docstring"


def test_no_heading_documents_a_hook_that_does_not_exist():
    text = (DOCS / "plugin-hooks.md").read_text()
    documented = set(re.findall(r"^## (qtool_\w+)\(", text, re.MULTILINE))
    assert documented == {name for name, _ in HOOKS}
