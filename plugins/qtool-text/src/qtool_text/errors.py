"""The one error a table that cannot be read raises."""

import qtool


class TextFormatError(qtool.QtoolError, ValueError):
    """A table line that is malformed or does not fit the graph; the message names file, line, op and tensor."""
