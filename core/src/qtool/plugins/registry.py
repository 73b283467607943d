"""Named registries filled by plugin hooks; the core owns them and rejects duplicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import UnknownNameError, did_you_mean
from .manager import PluginError, PluginRecord, on_reload, plugin_manager

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    source: PluginRecord | None  # None: registered by the core itself

    @property
    def distribution(self) -> str:
        return self.source.distribution if self.source else "qtool"

    @property
    def version(self) -> str:
        if self.source:
            return self.source.version
        from qtool import __version__

        return __version__


class Registry(Generic[T]):
    """Things of one kind (platforms, observers, passes) by name, filled lazily from a hook.

    ``builtins`` are the core's own entries, registered before any plugin.
    """

    def __init__(self, kind: str, hook_name: str, builtins: Callable[[], dict[str, T]] | None = None,
                 name_of: Callable[[T], str] | None = None) -> None:
        self.kind, self.hook_name = kind, hook_name
        self._builtins, self._name_of = builtins, name_of
        self._entries: dict[str, Entry[T]] | None = None
        on_reload(self.clear)

    def clear(self) -> None:
        self._entries = None

    def entries(self) -> dict[str, Entry[T]]:
        if self._entries is None:
            plugins = plugin_manager()  # first: loading plugins clears every registry
            self._entries = {}
            for name, value in (self._builtins() if self._builtins else {}).items():
                self._entries[name] = Entry(name, value, None)
            for record, call in plugins.callers(self.hook_name):
                plugins.guarded(record, self.hook_name, call, register=self._register_for(record))
        return self._entries

    def _register_for(self, record: PluginRecord | None) -> Callable[..., None]:
        """The ``register`` function one plugin's hook receives: entries it adds name it as their source."""
        def register(*args) -> None:
            name, value = (self._name_of(args[0]), args[0]) if self._name_of and len(args) == 1 else args
            self.add(name, value, record)

        return register

    def add(self, name: str, value: T, source: PluginRecord | None) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self.kind} registered without a name: {value!r}")
        existing = self._entries.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {existing.distribution} {existing.version} "
                f"and by {source.distribution if source else 'qtool'} {source.version if source else ''}".rstrip()
            )
        self._entries[name] = Entry(name, value, source)

    def get(self, name: str) -> T:
        entries = self.entries()
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none installed"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, entries)} (known: {known})")
        return entries[name].value

    def names(self) -> list[str]:
        return sorted(self.entries())
