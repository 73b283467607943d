"""docs/cli.md documents every command, its help line and each of its options."""

import re
from pathlib import Path

import pytest

from qtool.cli.main import build_parser

CLI_DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


def commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    help_of = {choice.dest: choice.help for choice in sub._choices_actions}
    seen, found = set(), []
    for name, command in sub.choices.items():
        if id(command) not in seen:
            seen.add(id(command))
            found.append((name, command, help_of[name]))
    return found


def section(name: str) -> str:
    match = re.search(rf"^## qtool {re.escape(name)}\n(.*?)(?=^## |\Z)", CLI_DOC, re.MULTILINE | re.DOTALL)
    assert match, f"docs/cli.md has no '## qtool {name}' section"
    return match.group(1)


COMMANDS = commands()


def test_the_core_commands_are_there():
    assert {"list-platforms", "plugins", "inspect", "quantize", "explain", "analyse", "new-plugin"} <= {
        name for name, _, _ in COMMANDS}


@pytest.mark.parametrize("name, command, help_line", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_help_and_options_are_documented(name, command, help_line):
    text = section(name)
    assert help_line and help_line in text, f"the help line of '{name}' is not in its section"
    for action in command._actions:
        if action.dest == "help":
            continue
        names = action.option_strings or [action.dest]
        for option in names:
            assert f"`{option}`" in text, f"option {option} of '{name}' is undocumented"
        if action.help:
            assert action.help.replace("%%", "%") in text, f"help of {names[0]} ({name}) differs from docs"
