"""The typed registry: what plugins registered, listed with wildcards, described, and created."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.registry.hookspecs import ENTRY_KINDS

if TYPE_CHECKING:
    from dkdm_zoo.registry.options import Schema

#: Factory parameters that are not user options: the built object's inputs, and ``registry``, which
#: ``Registry.create`` passes itself as (a factory that builds other entries, e.g. the `run` teacher).
NOT_OPTIONS = ("spec", "teacher", "student", "registry")
#: a plugin whose import and registration take this long is flagged by `dkdm-zoo plugins`
SLOW_PLUGIN_SECONDS = 0.5


@dataclass
class Entry:
    """One registered teacher family, student architecture or method."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    plugin: str
    summary: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    #: teachers only: the class names this family loads, as ``_class_name`` in a folder's
    #: model_index.json or config.json (or "run.json" for a dkdm-zoo run folder); auto-detection reads them
    accepts: tuple[str, ...] = ()
    #: students and methods: recommended train settings (``[train]`` keys), used where the recipe and
    #: the command line set none; keyed by the student's preset name, "*" for every preset (a method's
    #: are all under "*"). See ``dkdm_zoo.config.recipes.apply_train_defaults`` for the order.
    train_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    _schema: Schema | None = field(default=None, repr=False, compare=False)

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
            who = f"{self.kind[:-1]} '{self.name}' (plugin {self.plugin})"
            try:
                obj: Any = importlib.import_module(module_name)
            except ImportError as exc:  # a plugin installed without its module or a dependency
                raise UserError(
                    f"{who}: its factory {self.factory!r} cannot be imported ({exc}); reinstall the "
                    "plugin, or uninstall it"
                ) from None
            for part in attr.split("."):
                if not hasattr(obj, part):
                    raise UserError(
                        f"{who}: its factory {self.factory!r} names {part!r}, which {module_name} does "
                        "not define; reinstall the plugin, or uninstall it"
                    )
                obj = getattr(obj, part)
            self.factory = obj
        return self.factory

    def schema(self) -> Schema:
        """The options, read off the factory's annotated signature (imports the factory): the one
        declaration that recipes, ``--set``, flags and run.json values are checked against."""
        if self._schema is None:
            from dkdm_zoo.registry.options import schema_of

            self._schema = schema_of(self.load(), skip=NOT_OPTIONS)
        return self._schema

    def check_options(
        self, values: Mapping[str, Any], *, where: str = "", require: bool = False
    ) -> dict[str, Any]:
        """``values`` checked and converted against ``schema()``; one-line ``UserError`` otherwise."""
        kind = self.kind[:-1]
        return self.schema().check(
            values, section=kind, owner=f"{kind} '{self.name}'", where=where, require=require
        )

    def option_defaults(self) -> dict[str, Any]:
        """Each option's default (None when it has none); imports the factory."""
        return self.schema().defaults()

    def train_defaults_for(self, preset: str | None = None) -> dict[str, Any]:
        """The declared train settings for ``preset`` ("*" values, then the preset's own on top)."""
        return {**self.train_defaults.get("*", {}), **(self.train_defaults.get(preset, {}) if preset else {})}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind[:-1],
            "name": self.name,
            "summary": self.summary,
            "plugin": self.plugin,
            "factory": self.factory
            if isinstance(self.factory, str)
            else f"{self.factory.__module__}:{self.factory.__qualname__}",
            "options": self.option_defaults() if self.available else {},
            "option_types": (
                {n: o.type_text for n, o in self.schema().options.items()} if self.available else {}
            ),
            "available": self.available,
            "unavailable_reason": self.unavailable_reason(),
            **({"accepts": list(self.accepts)} if self.kind == "teachers" else {}),
            **({"train_defaults": self.train_defaults} if self.kind in ("students", "methods") else {}),
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
    #: seconds spent importing it and calling its hooks: every command, `--help` included, pays it
    load_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def slow(self) -> bool:
        return self.load_seconds >= SLOW_PLUGIN_SECONDS

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
            "load_seconds": round(self.load_seconds, 4),
            "slow": self.slow,
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
        """Build an entry: ``factory(*args, **overrides)``, every option checked and converted against
        the factory's signature first (unknown names, wrong types, missing required options are
        user errors).

        A factory with a ``registry`` parameter gets this registry (one registry per command, passed
        down explicitly, never rebuilt inside)."""
        entry = self.get(kind, name)
        factory = entry.load()
        overrides = entry.check_options(overrides, require=True)
        if _takes_registry(factory):
            overrides = {**overrides, "registry": self}
        return factory(*args, **overrides)

    @property
    def broken_plugins(self) -> list[PluginInfo]:
        return [p for p in self.plugins if not p.ok]


def _takes_registry(factory: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "registry" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _failed(plugin: PluginInfo) -> str:
    return f"failed to load ({plugin.error}): see `dkdm-zoo plugins`"


def _normal(name: str) -> str:
    """A plugin or entry name without case, '_' vs '-' or a 'dkdm-zoo-' prefix (my_net == dkdm-zoo-my-net)."""
    return name.lower().replace("_", "-").removeprefix("dkdm-zoo-")
