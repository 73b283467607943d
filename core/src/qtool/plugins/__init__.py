"""Plugin discovery through the ``qtool`` entry-point group."""

from .hookspecs import hookimpl, hookspec
from .manager import PluginError, PluginRecord, plugin_manager, plugins

__all__ = ["PluginError", "PluginRecord", "hookimpl", "hookspec", "plugin_manager", "plugins"]
