"""The ``qtool`` command line: sub-commands from core modules and from plugins."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import QtoolError
from ..plugins import plugin_manager
from . import analyse, explain, inspect, new_plugin, platforms, quantize

# Each command module has add_parser(subparsers) which sets ``handler`` on its parser.
COMMAND_MODULES = [platforms, inspect, quantize, explain, analyse, new_plugin]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtool", description="Post-training quantization for ONNX models.")
    parser.add_argument("--version", action="version", version=f"qtool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    plugin_manager().call_each("qtool_register_commands", cli=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except QtoolError as exc:
        print(f"qtool: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qtool: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
