"""Entry point of group ``qtool``: registers the ``tensorrt`` platform."""

import qtool

from .platform import TensorRTPlatform


@qtool.hookimpl
def qtool_register_platforms(register):
    register(TensorRTPlatform)
