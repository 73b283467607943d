"""The ``qtool`` command line: sub-commands from core modules and from plugins.

Exit status: 0 success, 1 an error (one line, ``qtool: error: ...``), 2 a usage
error (argparse's convention), 130 interrupted, 141 the reader of stdout went
away, 143 terminated (SIGTERM: a job scheduler's or a timeout's stop cleans up as
Ctrl-C does). Command modules import their heavy parts (torch, onnx) when they
run, so that ``--version`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager

from .. import __version__
from ..errors import QtoolError
from . import analyse, explain, inspect, new_plugin, platforms, quantize
from .entry import interrupted, quiet_stdout, report_interrupted

# Each command module has add_parser(subparsers) which sets ``handler`` on its parser.
COMMAND_MODULES = [platforms, inspect, quantize, explain, analyse, new_plugin]
EXIT_ERROR, EXIT_USAGE, EXIT_TERMINATED = 1, 2, 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM raised where the run is, so that every cleanup runs (an atomic write's temporary file, a by-blocks
    run's work folder), as for Ctrl-C; the default action ended the process with them left behind."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextmanager
def _sigterm_raises():
    """SIGTERM as :class:`Terminated` while the command runs (the main thread only can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser(*, plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The parser of the core commands and, unless ``plugin_commands`` is false, the plugins' commands."""
    parser = argparse.ArgumentParser(prog="qtool", description="Post-training quantization for ONNX models.")
    parser.add_argument("--version", action="version", version=f"qtool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    if plugin_commands:
        from ..plugins import plugin_manager

        plugin_manager().call_each("qtool_register_commands", cli=sub)
    return parser


def core_command_names() -> set[str]:
    sub = next(a for a in build_parser(plugin_commands=False)._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def needs_plugin_commands(argv: list[str]) -> bool:
    """Whether parsing ``argv`` needs the plugins' commands: not for ``--version`` nor a core command."""
    if argv[:1] == ["--version"]:
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command is None or command not in core_command_names()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(plugin_commands=needs_plugin_commands(argv))
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        with _sigterm_raises():
            return int(args.handler(args) or 0)
    except Terminated:
        print("qtool: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except QtoolError as exc:
        print(f"qtool: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (qtool ... | head): not an error of ours
        return quiet_stdout()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        return report_interrupted()


if __name__ == "__main__":
    sys.exit(main())
