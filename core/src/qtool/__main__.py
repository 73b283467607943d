"""``python -m qtool``: the same as the ``qtool`` command."""

from .cli.entry import run

run()
