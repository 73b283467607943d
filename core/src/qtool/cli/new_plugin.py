"""``qtool new-plugin NAME``: a working skeleton of a platform plugin distribution."""

from __future__ import annotations

import re
from importlib import metadata, resources
from pathlib import Path
from string import Template

from .. import __version__
from ..errors import QtoolError
from ..files import check_output_path, write_atomic

NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
MAX_NAME = 100
# template file -> path in the new distribution ({module} is the package name)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{module}/__init__.py",
    "plugin.py.tmpl": "src/{module}/plugin.py",
    "platform.py.tmpl": "src/{module}/platform.py",
    "test_contract.py.tmpl": "tests/test_{module}_contract.py",
}


class NewPluginError(QtoolError, ValueError):
    """A plugin name that cannot be used, or a target folder that is taken."""


def add_parser(sub) -> None:
    p = sub.add_parser("new-plugin", help="write a skeleton platform plugin distribution")
    p.add_argument("name", help="platform name: lowercase letters and digits, parts joined by '-'")
    p.add_argument("--dir", default=".", help="folder to create qtool-NAME/ in (default: here)")
    p.set_defaults(handler=run)


def run(args) -> int:
    root = new_plugin(args.name, args.dir)
    installable = root if root.is_absolute() else f"./{root}"  # pip reads a bare name as a requirement
    print(f"wrote {root}: pip install -e {installable}, then pytest {root / 'tests'}")
    return 0


def new_plugin(name: str, folder: str | Path = ".") -> Path:
    """Write the skeleton of distribution ``qtool-NAME`` under ``folder``; return its root."""
    _check_name(name)
    module = "qtool_" + name.replace("-", "_")
    values = {"name": name, "module": module, "distribution": f"qtool-{name}", "qtool_version": __version__,
              "class_name": "".join(part.capitalize() for part in name.split("-")) + "Platform"}
    root = Path(folder) / values["distribution"]
    for target in FILES.values():  # --dir a file, a folder it cannot write in: one line, before any file is written
        check_output_path(root / target.format(module=module), what="new-plugin --dir")
    if root.exists() and any(root.iterdir()):
        raise NewPluginError(f"{root} exists and is not empty; choose another --dir")
    templates = resources.files(__package__) / "new_plugin_templates"
    texts = {target.format(module=module): Template(templates.joinpath(template).read_text(encoding="utf-8"))
             .substitute(values) for template, target in FILES.items()}
    for target, text in texts.items():
        write_atomic(root / target, text)
    return root


def _check_name(name: str) -> None:
    """A well-formed platform name, without qtool's prefix, that no installed platform or distribution has (pip would
    replace that distribution by the skeleton)."""
    if len(name) > MAX_NAME:  # its folder's and files' names must fit the file system's 255 bytes
        raise NewPluginError(f"plugin name {name[:20]}... ({len(name)} characters): at most {MAX_NAME} characters")
    if not NAME.match(name):
        raise NewPluginError(f"plugin name {name!r}: use lowercase letters and digits, parts joined by '-' "
                             "(e.g. 'acme-npu')")
    if name == "qtool" or name.startswith("qtool-"):
        raise NewPluginError(f"plugin name {name!r}: give the platform's name without 'qtool-' (e.g. "
                             f"{name.removeprefix('qtool-') if name != 'qtool' else 'acme-npu'!r}); the distribution "
                             "is named qtool-NAME")
    try:
        installed = metadata.distribution(f"qtool-{name}")
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None:
        raise NewPluginError(f"plugin name {name!r}: distribution qtool-{name} {installed.version} is installed, and "
                             "installing the skeleton would replace it; choose another name")
    from ..platform import PLATFORMS

    entries = PLATFORMS.entries()
    if name in entries:
        raise NewPluginError(f"plugin name {name!r}: platform {name!r} is installed (distribution "
                             f"{entries[name].distribution}); choose another name")
