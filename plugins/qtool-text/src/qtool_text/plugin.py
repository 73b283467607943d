"""Entry point of group ``qtool``: registers the ``text`` platform."""

import qtool

from .platform import TextPlatform


@qtool.hookimpl
def qtool_register_platforms(register):
    register(TextPlatform)
