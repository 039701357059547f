"""Which model classes a file may name (run.json, a saved student config), checked BEFORE any import.

A run folder or a pipeline folder names the class of its student (``"module:Class"``). Importing a
module runs it, so a file must not be able to choose what gets imported: only modules of diffusers,
of dkdm_zoo, of a plugin that provides students, or modules the process has already imported (which
runs nothing new, as diffusers itself resolves components) are imported, and the class must then
be a diffusers ``ModelMixin``. Pickle never enters: students load from safetensors only.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError

TRUSTED_PACKAGES = frozenset({"diffusers", "dkdm_zoo"})


def class_reference(obj: type | object) -> str:
    """``"module:QualName"`` of a class or of an instance's class (how run.json and configs name it)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _top_package(module_name: str) -> str:
    return module_name.split(".", 1)[0]


def _factory_module(factory: Any) -> str | None:
    if isinstance(factory, str):
        return factory.partition(":")[0]
    return getattr(factory, "__module__", None)


def plugin_packages(registry: Any) -> frozenset[str]:
    """Top-level packages of the plugins that registered students in ``registry`` (nothing is imported)."""
    packages = set()
    for entry in registry.list("students"):
        module = _factory_module(entry.factory)
        if module:
            packages.add(_top_package(module))
    for plugin in registry.plugins:
        if plugin.ok and plugin.module and "students" in plugin.registered:
            packages.add(_top_package(plugin.module))
    return frozenset(packages)


def installed_plugin_packages() -> frozenset[str]:
    """Top-level packages of the dkdm_zoo plugins installed here (entry-point metadata; nothing imported).

    Used where no registry exists: diffusers loading a pipeline folder from user code.
    """
    from dkdm_zoo.registry.loader import entry_point_sources

    return frozenset(_top_package(s.module) for s in entry_point_sources() if s.module)


def resolve_model_class(
    reference: str, *, allowed_packages: Collection[str] | None = None, where: object = "a saved model"
) -> type:
    """The diffusers ``ModelMixin`` class named ``"module:Class"`` by a file, imported only if allowed.

    ``allowed_packages``: packages besides diffusers and dkdm_zoo whose modules may be imported
    (``plugin_packages(registry)``); None means the installed dkdm_zoo plugins.
    """
    from diffusers import ConfigMixin, ModelMixin

    module_name, sep, attr = str(reference).partition(":")
    if not sep or not module_name or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise UserError(f"{where}: model class {reference!r} is not of the form 'module:Class'")
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise UserError(f"{where}: model class {reference!r} names an invalid module")
    top = _top_package(module_name)
    known = module_name in sys.modules or top in TRUSTED_PACKAGES
    if not known and top not in (
        installed_plugin_packages() if allowed_packages is None else allowed_packages
    ):
        raise UserError(
            f"{where}: refusing to import {module_name!r} (model class {reference!r}): only diffusers, dkdm_zoo "
            "and installed dkdm-zoo plugins that provide students are imported; install or enable the plugin "
            "that defines this student"
        )
    if top not in sys.modules and (shadow := _in_working_folder(top)) is not None:
        raise UserError(
            f"{where}: refusing to import {module_name!r} from the working folder ({shadow}): a file there "
            "would stand in for the installed package; run the command from another folder"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise UserError(
            f"{where}: cannot import model class {reference!r}: install the package (plugin) that defines it"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, ModelMixin) and issubclass(obj, ConfigMixin)):
        raise UserError(
            f"{where}: model class {reference!r} is not a diffusers ModelMixin + ConfigMixin: refusing to load it"
        )
    return obj


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config without its private keys (``_class_name``, ``_name_or_path``, ...)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def model_from_reference(reference: str, config: Mapping[str, Any], *, where: object) -> Any:
    """A fresh instance of the model class ``reference`` names (vetted by ``resolve_model_class`` against
    the installed plugins), built from ``config``: how saved wrappers rebuild the network they hold."""
    return resolve_model_class(reference, where=where).from_config(public_config(config))


def _in_working_folder(top: str) -> str | None:
    """Where package ``top`` would be imported from, if that is the working folder: ``python -m`` and
    ``python -c`` put it first on sys.path, so a run folder started in could shadow an installed plugin."""
    cwd = Path.cwd().resolve()
    if not any(Path(entry or ".").resolve() == cwd for entry in sys.path):
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.has_location:
        origin = Path(spec.origin)
        entry = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        return str(origin) if entry.resolve() == cwd else None
    for location in spec.submodule_search_locations or []:  # a namespace package
        if Path(location).resolve().parent == cwd:
            return str(location)
    return None
