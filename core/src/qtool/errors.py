"""The base of every error qtool reports to a user as one clear line, and its did-you-mean hint."""

from __future__ import annotations

from collections.abc import Iterable


class QtoolError(Exception):
    """An error with a message that names the file, key, node or plugin at fault."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name (a different case counts as closest), or ''."""
    import difflib  # only an error pays its import

    known = list(known)
    same_case = [k for k in known if k.lower() == str(name).lower()]
    close = same_case or difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class UnknownNameError(QtoolError, KeyError):
    """A name (platform, observer, pass, preset) that nothing registered."""


class FeedError(QtoolError, RuntimeError):
    """A run of the model failed on one feed of the user's data (a calibration file or item): the message leads with
    where the feed came from and what it fed (:mod:`qtool.calibration.provenance`), as the data's other errors do."""
