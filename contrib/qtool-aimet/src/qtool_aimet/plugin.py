"""Entry point of group ``qtool``: registers the ``aimet`` and ``aimet-1.0`` platforms."""

import qtool

from .platform import Aimet1Platform, AimetPlatform


@qtool.hookimpl
def qtool_register_platforms(register):
    register(AimetPlatform)
    register(Aimet1Platform)
