"""Loading plugins from entry points, one at a time, so a broken one cannot sink the rest.

Environment:
* ``QTOOL_STRICT_PLUGINS=1`` turns any plugin failure into a fatal error.
* ``QTOOL_BLOCK_PLUGINS=a,b`` skips plugins by entry-point or distribution name.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from ..errors import QtoolError
from . import hookspecs
from .checks import HOOKS, hook_problems

ENTRY_POINT_GROUP = "qtool"


class PluginError(QtoolError, RuntimeError):
    """A plugin failed to load or register, or two plugins claim the same name."""


@dataclass
class PluginRecord:
    """One entry point of the ``qtool`` group and what became of it."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blocked: bool = False

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} (distribution {self.distribution} {self.version})"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "blocked": self.blocked,
            "error": "; ".join(self.errors) or None,
        }


class PluginSet:
    """The loaded plugin manager plus a record for every entry point found."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("qtool")
        self.manager.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}

    def load_entry_points(self) -> None:
        blocked = {n.strip() for n in os.environ.get("QTOOL_BLOCK_PLUGINS", "").split(",") if n.strip()}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                         key=lambda e: (e.name, e.dist.name if e.dist else "")):
            dist = ep.dist
            record = PluginRecord(ep.name, dist.name if dist else "?", dist.version if dist else "?", ep.value)
            # two distributions may name their entry points alike: each is its own plugin
            key = ep.name if ep.name not in self.records else f"{ep.name} ({record.distribution})"
            self.records[key] = record
            if ep.name in blocked or record.distribution in blocked:
                record.blocked = True
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, reported by name
                self.fail(record, f"failed to import: {type(exc).__name__}: {exc}", exc)
                continue
            if self.register(record, key, module):
                record.hooks = sorted(
                    hook.name for hook in self.manager.get_hookcallers(module) or [] if hook.name in HOOKS)

    def register(self, record: PluginRecord, key: str, module) -> bool:
        """Register ``module`` under ``key`` once its hooks are checked; False where it cannot be."""
        if self.manager.is_registered(module):
            name = self.manager.get_name(module)
            other = self.records[name].label if name in self.records else f"plugin {name!r}"
            self.fail(record, f"its module {record.module} is already loaded as {other}")
            return False
        errors, warnings = hook_problems(self.manager, module)
        for warning in warnings:
            self.fail(record, warning)
        if errors:
            self.fail(record, "; ".join(errors))
            return False
        self.manager.register(module, name=key)
        return True

    def call_each(self, hook_name: str, **kwargs) -> None:
        """Call ``hook_name`` with ``kwargs`` plugin by plugin; a failing plugin is reported and skipped."""
        for record, call in self.callers(hook_name):
            self.guarded(record, hook_name, call, **kwargs)

    def guarded(self, record: PluginRecord | None, hook_name: str, call: Callable[..., list], **kwargs) -> None:
        """``call(**kwargs)`` (one plugin's hook); its failure is reported with the plugin's name, not raised."""
        try:
            call(**kwargs)
        except PluginError as exc:
            self.fail(record, str(exc), exc)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported by name, others go on
            self.fail(record, f"{hook_name} failed: {type(exc).__name__}: {exc}", exc)

    def callers(self, hook_name: str) -> Iterator[tuple[PluginRecord | None, Callable[..., list]]]:
        """``(record, call)`` for each plugin implementing ``hook_name``, in registration order: ``call(**kwargs)``
        is pluggy's hook call restricted to that one plugin, so one plugin's failure cannot stop the others."""
        names = [impl.plugin_name for impl in getattr(self.manager.hook, hook_name).get_hookimpls()]
        for name in names:
            others = [self.manager.get_plugin(other) for other in names if other != name]
            yield self.records.get(name), self.manager.subset_hook_caller(hook_name, remove_plugins=others)

    def fail(self, record: PluginRecord | None, message: str, exc: BaseException | None = None) -> None:
        if record is not None:
            record.errors.append(message)
        self.report(f"{record.label if record else 'a plugin'}: {message}", exc)

    def report(self, line: str, exc: BaseException | None = None) -> None:
        """A plugin's failure on stderr as a warning, or raised under ``QTOOL_STRICT_PLUGINS=1``."""
        if exc is not None and os.environ.get("QTOOL_DEBUG") == "1":
            traceback.print_exception(exc, file=sys.stderr)
        if os.environ.get("QTOOL_STRICT_PLUGINS") == "1":
            raise PluginError(line) from exc
        print(f"qtool: warning: {line}", file=sys.stderr)

    def record_for(self, plugin_name: str) -> PluginRecord | None:
        return self.records.get(plugin_name)


def misplaced(name: str) -> str:
    """A hint where an entry point for ``name`` (by its name, or its distribution's ``qtool-NAME``) sits in a group
    qtool does not read but a near one (``qtools``, ``qtool.platforms``...); else ''."""
    import difflib

    for group in sorted(metadata.entry_points().groups - {ENTRY_POINT_GROUP}):
        if not (group.lower().startswith(ENTRY_POINT_GROUP)
                or difflib.SequenceMatcher(None, group.lower(), ENTRY_POINT_GROUP).ratio() >= 0.8):
            continue
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist else "?"
            if name in (ep.name, dist.removeprefix("qtool-")):
                return (f"; distribution {dist} declares entry point {ep.name!r} in group {group!r}: qtool reads "
                        f"group {ENTRY_POINT_GROUP!r} ([project.entry-points.{ENTRY_POINT_GROUP}])")
    return ""


def blocked_hint(name: str) -> str:
    """Where a plugin that likely registers ``name`` (its entry point's name or its distribution's ``qtool-NAME``, or
    that followed by ``-...``) was skipped by QTOOL_BLOCK_PLUGINS, a hint saying so; else ''."""
    for record in plugin_manager().records.values():
        stem = record.distribution.removeprefix("qtool-")
        if record.blocked and (name in (record.name, stem) or name.startswith((f"{record.name}-", f"{stem}-"))):
            setting = os.environ.get("QTOOL_BLOCK_PLUGINS", "")
            return (f"; plugin {record.name!r} (distribution {record.distribution}), which would register it, is "
                    f"blocked by QTOOL_BLOCK_PLUGINS={setting}")
    return ""


_CURRENT: PluginSet | None = None


def plugin_manager(reload: bool = False) -> PluginSet:
    """The process-wide plugin set, loaded on first use."""
    global _CURRENT
    if _CURRENT is None or reload:
        plugin_set = PluginSet()
        plugin_set.load_entry_points()
        _CURRENT = plugin_set
        _on_reload_callbacks_run()
    return _CURRENT


def plugins() -> list[PluginRecord]:
    return list(plugin_manager().records.values())


_RELOAD_CALLBACKS: list[Callable[[], None]] = []


def on_reload(callback: Callable[[], None]) -> None:
    """Let a registry drop what it cached when plugins are loaded again."""
    _RELOAD_CALLBACKS.append(callback)


def _on_reload_callbacks_run() -> None:
    for callback in _RELOAD_CALLBACKS:
        callback()
