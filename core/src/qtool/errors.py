"""The base of every error qtool reports to a user as one clear line."""


class QtoolError(Exception):
    """An error with a message that names the file, key, node or plugin at fault."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownNameError(QtoolError, KeyError):
    """A name (platform, observer, pass, preset) that nothing registered."""
