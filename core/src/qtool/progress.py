"""Rich progress bars on stderr, shown only on a terminal; rich is imported only when a bar was asked for."""

from __future__ import annotations

from typing import Any


class _NoBar:
    """The bar of a run that asked for none: it takes the calls and shows nothing (rich stays unimported)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def progress_bar(enabled: bool, *, remaining: bool = False) -> Any:
    """A transient bar (a rich Progress) when ``enabled``; its tasks' descriptions say what is being worked on.
    It shows the time remaining when ``remaining``, else the time elapsed."""
    if not enabled:
        return _NoBar()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    clock = TimeRemainingColumn() if remaining else TimeElapsedColumn()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), clock,
                    console=console, transient=True, disable=not console.is_terminal)
