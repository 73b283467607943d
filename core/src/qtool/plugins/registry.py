"""Named registries filled by plugin hooks; the core owns them and rejects duplicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import UnknownNameError, did_you_mean
from .manager import PluginError, PluginRecord, blocked_hint, misplaced, on_reload, plugin_manager

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
        self.clear()
        on_reload(self.clear)

    def clear(self) -> None:
        self._entries = None
        self._clashes: dict[str, list[Entry[T]]] = {}  # names two plugins registered: neither is used
        self._unreported: set[str] = set()  # those names, until a warning or an error said so

    def entries(self) -> dict[str, Entry[T]]:
        entries = self._filled()
        self._report_clashes()
        return entries

    def _filled(self) -> dict[str, Entry[T]]:
        if self._entries is None:
            plugins = plugin_manager()  # first: loading plugins clears every registry
            self._entries, self._clashes, self._unreported = {}, {}, set()
            for name, value in (self._builtins() if self._builtins else {}).items():
                self._entries[name] = Entry(name, value, None)
            for record, call in plugins.callers(self.hook_name):
                plugins.guarded(record, self.hook_name, call, register=self._register_for(record))
        return self._entries

    def _report_clashes(self) -> None:
        """One warning per name two plugins registered (fatal under QTOOL_STRICT_PLUGINS=1)."""
        for name in sorted(self._unreported):
            self._unreported.discard(name)
            plugin_manager().report(self._clash(name))

    def _register_for(self, record: PluginRecord | None) -> Callable[..., None]:
        """The ``register`` function one plugin's hook receives: entries it adds name it as their source."""
        def register(*args) -> None:
            name, value = (self._name_of(args[0]), args[0]) if self._name_of and len(args) == 1 else args
            self.add(name, value, record)

        return register

    def add(self, name: str, value: T, source: PluginRecord | None) -> None:
        """Register ``value`` as ``name``. A name qtool's core has stays the core's; a name two plugins register is
        neither's (:meth:`get` says so), whichever loads first: each is reported, and their other entries stay."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self.kind} registered without a name: {value!r}")
        entry, existing = Entry(name, value, source), self._entries.get(name)
        if existing is not None and existing.source is None:
            plugin_manager().fail(source, f"{self.kind} {name!r} is registered twice: by qtool {existing.version} and "
                                          f"by {entry.distribution} {entry.version}; qtool's own is used (register "
                                          "yours under another name)")
        elif existing is not None or name in self._clashes:
            clash = self._clashes.setdefault(name, [self._entries.pop(name)] if existing else [])
            clash.append(entry)
            message = self._clash(name)
            for other in clash:
                if other.source is not None:
                    other.source.errors.append(message)
            self._unreported.add(name)
        else:
            self._entries[name] = entry

    def _clash(self, name: str) -> str:
        by = sorted(f"{e.distribution} {e.version}" for e in self._clashes[name])
        times = "twice" if len(by) == 2 else f"{len(by)} times"
        return (f"{self.kind} {name!r} is registered {times}: by {', by '.join(by[:-1])} and by {by[-1]}; neither is "
                "used (uninstall one, or set QTOOL_BLOCK_PLUGINS to one's distribution)")

    def get(self, name: str) -> T:
        """The entry ``name``; a name two plugins registered is an error naming both (and no warning before it)."""
        entries = self._filled()
        if name in self._clashes:
            self._unreported.discard(name)
            raise PluginError(self._clash(name))
        self._report_clashes()
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none installed"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, entries)} (known: {known})"
                                   f"{blocked_hint(name) or misplaced(name)}")
        return entries[name].value

    def names(self) -> list[str]:
        return sorted(self.entries())
