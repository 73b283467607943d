"""What a plugin module gets wrong about its hooks, found before it is registered: one sentence each."""

from __future__ import annotations

import inspect

import pluggy

from ..errors import did_you_mean
from . import hookspecs

#: every hook, with the arguments qtool passes it
HOOKS = {name: tuple(inspect.signature(fn).parameters) for name, fn in vars(hookspecs).items()
         if name.startswith("qtool_") and callable(fn)}


def hook_problems(manager: pluggy.PluginManager, plugin) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of a plugin module (or object). Errors keep it from registering: a hook taking an
    argument qtool does not pass. Warnings: a decorated function that is no hook, a hook's function without
    ``@qtool.hookimpl``, no hook at all."""
    errors, warnings, hooks = [], [], 0
    for attr in dir(plugin):
        opts = manager.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            if attr in HOOKS and callable(getattr(plugin, attr, None)):
                warnings.append(f"{attr} is not decorated with @qtool.hookimpl, so qtool never calls it")
            continue
        hook = opts.get("specname") or attr
        if hook not in HOOKS:
            if not opts.get("optionalhook"):
                hint = did_you_mean(hook, HOOKS) or f" (hooks: {', '.join(HOOKS)})"
                warnings.append(f"{hook} is no qtool hook{hint}")
            continue
        hooks += 1
        taken = _required(getattr(plugin, attr))
        unknown = [name for name in taken if name not in HOOKS[hook]]
        if unknown:
            errors.append(f"hook {hook}({', '.join(taken)}) takes {', '.join(unknown)}, which qtool does not pass: "
                          f"it must take ({', '.join(HOOKS[hook])})")
    if not hooks and not errors and not warnings:
        warnings.append("implements no qtool hook (a function named after one, decorated with @qtool.hookimpl)")
    return errors, warnings


def _required(function) -> list[str]:
    """The arguments ``function`` needs (those without a default), as pluggy passes them: by name."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    names = [p.name for p in parameters if p.default is p.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    method = "." in getattr(function, "__qualname__", "") and names[:1] in (["self"], ["cls"])
    return names[1:] if method else names  # a class's function, as pluggy reads it
