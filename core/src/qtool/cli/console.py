"""Rich consoles that wrap only on a terminal: piped or redirected output keeps every line whole."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

PIPED_WIDTH = 1000  # wide enough that no table row or message of qtool's is folded


def pass_progress(header: str) -> Callable:
    """A ``finished(run)`` callback printing one line per pass on stderr, after ``header`` at the first pass.

    The header waits for the first pass so that an input rejected before any work gets one line only.
    """
    progress = console(stderr=True)
    started = []

    def finished(step) -> None:
        if not started:
            progress.print(escape(header))
            started.append(True)
        mark = "[green]\u2713[/green]" if step.modified else "[dim]-[/dim]"
        progress.print(f"  {mark} {step.name:<26} {step.seconds:8.3f} s")

    return finished


class _Console(Console):
    """A rich Console that leaves a closed pipe to the command line's handler (rich's own exits with status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console(*, stderr: bool = False) -> Console:
    """A Console for stdout (or stderr); when that is not a terminal, no colour codes and no wrapping."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return _Console(stderr=stderr)
    return _Console(file=stream, soft_wrap=True, width=PIPED_WIDTH, no_color=True, highlight=False)
