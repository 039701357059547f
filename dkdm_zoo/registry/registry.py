"""The typed registry: what plugins registered, listed with wildcards, described, and created."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.registry.hookspecs import ENTRY_KINDS

#: Factory parameters that are not user options: the built object's inputs, and ``registry``, which
#: ``Registry.create`` passes itself as (a factory that builds other entries, e.g. the `run` teacher).
NOT_OPTIONS = ("spec", "teacher", "student", "registry")


@dataclass
class Entry:
    """One registered teacher family, student architecture or method."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    plugin: str
    summary: str = ""
    options: dict[str, Any] | None = None
    requires: tuple[str, ...] = ()
    extra: str | None = None
    #: teachers only: the class names this family loads, as ``_class_name`` in a folder's
    #: model_index.json or config.json (or "run.json" for a dkdm-zoo run folder); auto-detection reads them
    accepts: tuple[str, ...] = ()

    def missing_requirements(self) -> list[str]:
        """Optional modules this entry needs that are not installed (checked without importing)."""
        return [mod for mod in self.requires if importlib.util.find_spec(mod) is None]

    @property
    def available(self) -> bool:
        return not self.missing_requirements()

    def unavailable_reason(self) -> str | None:
        missing = self.missing_requirements()
        if not missing:
            return None
        how = f"pip install 'dkdm-zoo[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
        return f"{self.kind[:-1]} '{self.name}' needs {', '.join(missing)}: {how}"

    def load(self) -> Callable[..., Any]:
        """The factory callable, importing a lazy ``"module:attr"`` reference on first use."""
        if reason := self.unavailable_reason():
            raise UserError(reason)
        if isinstance(self.factory, str):
            module_name, _, attr = self.factory.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.factory = obj
        return self.factory

    def resolved_options(self) -> dict[str, Any]:
        """Declared options, or the factory's keyword defaults when none were declared (imports)."""
        if self.options is not None:
            return dict(self.options)
        try:
            signature = inspect.signature(self.load())
        except (TypeError, ValueError):
            return {}
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in NOT_OPTIONS
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind[:-1],
            "name": self.name,
            "summary": self.summary,
            "plugin": self.plugin,
            "factory": self.factory
            if isinstance(self.factory, str)
            else f"{self.factory.__module__}:{self.factory.__qualname__}",
            "options": self.resolved_options() if self.available else (self.options or {}),
            "available": self.available,
            "unavailable_reason": self.unavailable_reason(),
            **({"accepts": list(self.accepts)} if self.kind == "teachers" else {}),
        }


@dataclass
class PluginInfo:
    """A plugin as loaded: where it came from, what it registered, or why it broke."""

    name: str
    version: str | None
    module: str | None
    builtin: bool
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: for a broken plugin: the names it registered before failing (none of them were kept)
    attempted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "builtin": self.builtin,
            "ok": self.ok,
            "error": self.error,
            "registered": self.registered,
            "attempted": self.attempted,
        }


@dataclass
class RecipeSource:
    path: Path
    plugin: str


@dataclass
class Command:
    name: str
    app: Any
    plugin: str
    help: str = ""


class Registry:
    """Everything the loaded plugins registered. Build one with ``build_registry()``."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in ENTRY_KINDS}
        self.recipe_sources: list[RecipeSource] = []
        self.commands: dict[str, Command] = {}
        self.plugins: list[PluginInfo] = []
        self.plugin_manager: Any = None

    # -- queries -------------------------------------------------------------------------------
    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self.entries:
            raise UserError(f"unknown kind '{kind}': expected one of {', '.join(ENTRY_KINDS)}")
        return self.entries[kind]

    def list(self, kind: str, pattern: str = "*") -> list[Entry]:
        """Entries of ``kind`` whose names match the shell-style wildcard ``pattern``."""
        entries = self._kind(kind)
        return [entries[name] for name in sorted(entries) if fnmatch.fnmatchcase(name, pattern)]

    def get(self, kind: str, name: str) -> Entry:
        entries = self._kind(kind)
        if name not in entries:
            raise self.unknown_name(kind, name, entries)
        return entries[name]

    def unknown_name(self, kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
        """The error for a missing name, pointing at a broken plugin that would (or might) provide it.

        ``kind`` is an entry kind, "recipes", or "names" (any kind).
        """
        broken = self.broken_plugins
        for plugin in broken:
            kinds = plugin.attempted if kind == "names" else {kind: plugin.attempted.get(kind, [])}
            if any(name in names for names in kinds.values()):
                return UnknownNameError(
                    kind, name, known, cause=f"plugin '{plugin.name}' registers it but {_failed(plugin)}"
                )
        for plugin in broken:
            if _normal(name) in {_normal(plugin.name), _normal((plugin.module or "").split(".")[0])}:
                return UnknownNameError(
                    kind, name, known, cause=f"plugin '{plugin.name}' may provide it but {_failed(plugin)}"
                )
        note = ""
        if broken:
            names = ", ".join(f"'{p.name}'" for p in broken)
            note = (
                f"{len(broken)} plugin(s) failed to load ({names}) and may provide it: see `dkdm-zoo plugins`"
            )
        return UnknownNameError(kind, name, known, note=note)

    def find(self, name: str) -> list[Entry]:
        """Every entry of any kind with this name (names are unique within a kind only)."""
        return [self.entries[kind][name] for kind in ENTRY_KINDS if name in self.entries[kind]]

    def teachers_accepting(self, class_name: str) -> list[Entry]:
        """The teacher families that registered ``class_name`` in ``accepts`` (auto-detection)."""
        return [e for e in self.list("teachers") if class_name in e.accepts]

    def all_names(self) -> list[str]:
        return sorted({name for kind in ENTRY_KINDS for name in self.entries[kind]})

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        return self.get(kind, name).describe()

    def create(self, kind: str, name: str, *args: Any, **overrides: Any) -> Any:
        """Build an entry: ``factory(*args, **overrides)``; unknown option names are user errors.

        A factory with a ``registry`` parameter gets this registry (one registry per command, passed
        down explicitly, never rebuilt inside)."""
        entry = self.get(kind, name)
        factory = entry.load()
        _check_overrides(entry, factory, overrides)
        if _takes_registry(factory):
            overrides = {**overrides, "registry": self}
        return factory(*args, **overrides)

    @property
    def broken_plugins(self) -> list[PluginInfo]:
        return [p for p in self.plugins if not p.ok]


def _takes_registry(factory: Callable[..., Any]) -> bool:
    try:
        return "registry" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _failed(plugin: PluginInfo) -> str:
    return f"failed to load ({plugin.error}): see `dkdm-zoo plugins`"


def _normal(name: str) -> str:
    """A plugin or entry name without case, '_' vs '-' or a 'dkdm-zoo-' prefix (my_net == dkdm-zoo-my-net)."""
    return name.lower().replace("_", "-").removeprefix("dkdm-zoo-")


def _check_overrides(entry: Entry, factory: Callable[..., Any], overrides: dict[str, Any]) -> None:
    """Refuse option names the factory cannot take (factories with ``**kwargs`` validate their own)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in overrides if k not in params or k == "registry")
    if unknown:
        options = sorted(set(params) - set(NOT_OPTIONS))
        raise UserError(
            f"{entry.kind[:-1]} '{entry.name}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"options: {', '.join(options) or 'none'}"
        )
