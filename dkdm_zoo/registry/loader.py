"""Plugin loading: a fresh plugin manager per registry, entry points loaded one at a time.

A plugin that fails to import (whatever it raises, ``SystemExit`` included; only Ctrl-C goes
through), registers a duplicate name or implements a misspelled hook is reported (name, version,
error) and skipped; everything else keeps working. Each plugin's load time is recorded
(``PluginInfo.load_seconds``): `dkdm-zoo plugins` shows it and flags slow ones. Environment:

- ``DKDM_ZOO_STRICT_PLUGINS=1``: raise ``PluginError`` instead of skipping a broken plugin.
- ``DKDM_ZOO_LOAD_PLUGINS=a,b``: load only these third-party plugins (empty: none).
- ``DKDM_ZOO_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party plugins at all.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from dkdm_zoo.errors import PluginError
from dkdm_zoo.registry import hookspecs
from dkdm_zoo.registry.registry import Command, Entry, PluginInfo, RecipeSource, Registry

ENTRY_POINT_GROUP = "dkdm_zoo"
ENV_STRICT = "DKDM_ZOO_STRICT_PLUGINS"
ENV_LOAD = "DKDM_ZOO_LOAD_PLUGINS"
ENV_DISABLE = "DKDM_ZOO_DISABLE_PLUGIN_AUTOLOAD"

# The package's own plugins: registered through exactly the hooks a third-party package uses.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "dkdm_zoo.teachers.plugin",
    "dkdm_zoo.students.plugin",
    "dkdm_zoo.methods.plugin",
    "dkdm_zoo.config.plugin",
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class PluginSource:
    """Where a plugin comes from, before it is imported."""

    name: str
    load: Callable[[], object]
    version: str | None = None
    module: str | None = None
    builtin: bool = False


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with dkdm-zoo's hook specs: never a global, so tests cannot leak."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def entry_point_sources() -> list[PluginSource]:
    """Third-party plugins from the ``dkdm_zoo`` entry-point group, filtered by the environment."""
    if _env_flag(ENV_DISABLE):
        return []
    allow = os.environ.get(ENV_LOAD)
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    sources = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allowed is not None and ep.name not in allowed:
            continue
        dist = getattr(ep, "dist", None)
        sources.append(
            PluginSource(
                name=ep.name,
                load=ep.load,
                version=getattr(dist, "version", None),
                module=ep.value.split(":")[0],
            )
        )
    return sources


def builtin_sources() -> list[PluginSource]:
    from dkdm_zoo import __version__

    return [
        PluginSource(
            name=mod,
            load=lambda mod=mod: importlib.import_module(mod),
            version=__version__,
            module=mod,
            builtin=True,
        )
        for mod in DEFAULT_PLUGINS
    ]


def build_registry(
    *,
    builtins: bool = True,
    entry_points: bool = True,
    extra: Iterable[PluginSource | tuple[str, object]] = (),
    strict: bool | None = None,
) -> Registry:
    """Build a registry with a fresh plugin manager.

    ``extra`` adds plugins directly (a ``PluginSource`` or ``(name, module_or_object)``), which is
    how tests register their own fake plugins.
    """
    strict = _env_flag(ENV_STRICT) if strict is None else strict
    registry = Registry()
    registry.plugin_manager = pm = make_plugin_manager()
    sources: list[PluginSource] = builtin_sources() if builtins else []
    if entry_points:
        sources += entry_point_sources()
    for item in extra:
        if isinstance(item, PluginSource):
            sources.append(item)
        else:
            name, obj = item
            sources.append(
                PluginSource(name=name, load=lambda obj=obj: obj, module=getattr(obj, "__name__", None))
            )
    for source in sources:
        _load_one(pm, registry, source, strict)
    return registry


def _load_one(pm: pluggy.PluginManager, registry: Registry, source: PluginSource, strict: bool) -> None:
    info = PluginInfo(name=source.name, version=source.version, module=source.module, builtin=source.builtin)
    registry.plugins.append(info)
    registered = False
    staged: dict[str, list[Any]] = {kind: [] for kind in hookspecs.KIND_OF_HOOK.values()}
    started = time.perf_counter()
    try:
        plugin = source.load()
        if pm.is_registered(plugin) or pm.has_plugin(source.name):
            raise PluginError(f"plugin '{source.name}' is already loaded")
        _check_hook_names(pm, plugin)
        pm.register(plugin, name=source.name)
        registered = True
        pm.check_pending()  # a misspelled hook name is an error, not a silent no-op
        _call_hooks(pm, registry, info, plugin, staged)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit, anything: one plugin must not take down the rest
        if registered:
            pm.unregister(name=source.name)
        info.error = _describe_error(exc)
        info.registered = {}
        # What it had registered before failing: an unknown name can then point at this plugin.
        info.attempted = {k: [i.name for i in items if isinstance(i, Entry)] for k, items in staged.items()}
        if strict:
            raise PluginError(
                f"plugin '{source.name}' ({source.version or 'unknown version'}) failed: {info.error}"
            ) from exc
    finally:
        info.load_seconds = time.perf_counter() - started


def _check_hook_names(pm: pluggy.PluginManager, plugin: object) -> None:
    """Refuse a hook implementation whose name is no hook, suggesting the closest hook name."""
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        hook = opts.get("specname") or attr
        if hook in hookspecs.HOOK_NAMES:
            continue
        close = difflib.get_close_matches(hook, hookspecs.HOOK_NAMES, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"hooks are {', '.join(hookspecs.HOOK_NAMES)}"
        raise PluginError(f"@hookimpl '{hook}' is not a dkdm-zoo hook: {hint}")


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, pluggy.PluginValidationError):
        return f"PluginValidationError: {exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _call_hooks(
    pm: pluggy.PluginManager,
    registry: Registry,
    info: PluginInfo,
    plugin: object,
    staged: dict[str, list[Any]],
) -> None:
    """Call this plugin's hooks with recording callbacks; commit its registrations only if all succeed."""
    for hook_name, kind in hookspecs.KIND_OF_HOOK.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(register=_make_register(registry, info, kind, staged))
    for kind, items in staged.items():
        for item in items:
            if isinstance(item, Entry):
                registry.entries[kind][item.name] = item
            elif isinstance(item, Command):
                registry.commands[item.name] = item
            else:
                registry.recipe_sources.append(item)
        if items:
            info.registered[kind] = [getattr(i, "name", None) or str(getattr(i, "path", i)) for i in items]


def _make_register(
    registry: Registry, info: PluginInfo, kind: str, staged: dict[str, list[Any]]
) -> Callable[..., None]:
    def owner_of(name: str) -> str | None:
        if kind == "commands":
            existing = registry.commands.get(name)
            return existing.plugin if existing else None
        existing = registry.entries[kind].get(name)
        return existing.plugin if existing else None

    def check_name(name: object) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise PluginError(
                f"invalid {kind[:-1]} name {name!r}: use lowercase letters, digits, '-', '_' or '.'"
            )
        other = owner_of(name)
        if other is None and any(getattr(i, "name", None) == name for i in staged[kind]):
            other = info.name
        if other is not None:
            raise PluginError(
                f"{kind[:-1]} '{name}' from plugin '{info.name}' is already registered by plugin '{other}'"
            )
        return name

    if kind == "recipes":

        def register_recipes(path: str | os.PathLike[str]) -> None:
            path = Path(path)
            if not path.exists():
                raise PluginError(f"recipe path {path} does not exist")
            staged[kind].append(RecipeSource(path=path, plugin=info.name))

        return register_recipes

    if kind == "commands":

        def register_command(name: str, app: Any, *, help: str = "") -> None:
            staged[kind].append(Command(name=check_name(name), app=app, plugin=info.name, help=help))

        return register_command

    def add_entry(
        name: str,
        factory: Callable[..., Any] | str,
        summary: str,
        requires: Sequence[str],
        extra: str | None,
        accepts: Sequence[str] = (),
        train_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(f"{kind[:-1]} '{name}': factory must be a callable or a 'module:attr' string")
        if isinstance(accepts, str) or not all(isinstance(a, str) and a for a in accepts):
            raise PluginError(f"teacher '{name}': accepts must be a sequence of class names, got {accepts!r}")
        defaults = dict(train_defaults or {})
        if not all(isinstance(k, str) and isinstance(v, Mapping) for k, v in defaults.items()):
            raise PluginError(
                f"{kind[:-1]} '{name}': train_defaults must map a preset name (or '*') to train values, "
                f"e.g. {{'*': {{'lr': 1e-3}}}}; got {train_defaults!r}"
            )
        staged[kind].append(
            Entry(
                kind=kind,
                name=check_name(name),
                factory=factory,
                plugin=info.name,
                summary=summary,
                requires=tuple(requires),
                extra=extra,
                accepts=tuple(accepts),
                train_defaults={k: dict(v) for k, v in defaults.items()},
            )
        )

    if kind == "teachers":

        def register_teacher(
            name: str,
            factory: Callable[..., Any] | str,
            *,
            summary: str = "",
            requires: Sequence[str] = (),
            extra: str | None = None,
            accepts: Sequence[str] = (),
        ) -> None:
            add_entry(name, factory, summary, requires, extra, accepts)

        return register_teacher

    if kind == "students":

        def register_student(
            name: str,
            factory: Callable[..., Any] | str,
            *,
            summary: str = "",
            requires: Sequence[str] = (),
            extra: str | None = None,
            train_defaults: Mapping[str, Mapping[str, Any]] | None = None,
        ) -> None:
            add_entry(name, factory, summary, requires, extra, train_defaults=train_defaults)

        return register_student

    if kind == "methods":

        def register_method(
            name: str,
            factory: Callable[..., Any] | str,
            *,
            summary: str = "",
            requires: Sequence[str] = (),
            extra: str | None = None,
            train_defaults: Mapping[str, Any] | None = None,
        ) -> None:
            if train_defaults is not None and not isinstance(train_defaults, Mapping):
                raise PluginError(f"method '{name}': train_defaults must map train keys to values")
            defaults = {"*": train_defaults} if train_defaults else None
            add_entry(name, factory, summary, requires, extra, train_defaults=defaults)

        return register_method

    def register_entry(
        name: str,
        factory: Callable[..., Any] | str,
        *,
        summary: str = "",
        requires: Sequence[str] = (),
        extra: str | None = None,
    ) -> None:
        add_entry(name, factory, summary, requires, extra)

    return register_entry
