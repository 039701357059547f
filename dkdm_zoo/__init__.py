"""dkdm-zoo: data-free knowledge distillation of diffusion models, any teacher to any student.

Importing the package is cheap (no torch); heavy modules are imported where they are used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dkdm-zoo")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

#: Modules that moved when the package was regrouped by idea (0.2): old name -> where its names live
#: now. Importing an old name still works, with a DeprecationWarning; CONTRIBUTING.md lists them.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "dkdm_zoo.options": ("dkdm_zoo.registry.options",),
    "dkdm_zoo.model_classes": ("dkdm_zoo.registry.classes",),
    "dkdm_zoo.recipes": ("dkdm_zoo.config.recipes", "dkdm_zoo.config.validation", "dkdm_zoo.config.catalog"),
    "dkdm_zoo.recipes_plugin": ("dkdm_zoo.config.plugin",),
    "dkdm_zoo.build": ("dkdm_zoo.config.resolve", "dkdm_zoo.config.build", "dkdm_zoo.config.resume"),
    "dkdm_zoo.run": ("dkdm_zoo.runs.run", "dkdm_zoo.runs.manifest", "dkdm_zoo.runs.student"),
    "dkdm_zoo.run_writer": ("dkdm_zoo.runs.writer",),
    "dkdm_zoo.card": ("dkdm_zoo.export.card",),
    "dkdm_zoo.budget": ("dkdm_zoo.engine.budget",),
    "dkdm_zoo.images": ("dkdm_zoo.generation.images",),
    "dkdm_zoo.compat": ("dkdm_zoo.testing.matrix",),
    "dkdm_zoo.teachers.tiny": ("dkdm_zoo.testing.tiny_teachers",),
    "dkdm_zoo.diffusion.sampling": ("dkdm_zoo.sampling.chain",),
}


class _MovedModule(types.ModuleType):
    """An old module name: each attribute is looked up in the modules that hold its names now."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"Moved: see {', '.join(targets)}.")
        self._targets = targets

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self._targets)}) has no {attr!r}"
        )

    def __dir__(self) -> list[str]:
        return sorted({n for t in self._targets for n in dir(importlib.import_module(t))})


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of ``MOVED_MODULES``' old names only; every other name goes to the usual finders."""

    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} moved to {', '.join(targets)}; import from there (the old name goes in a later release)",
            DeprecationWarning,
            stacklevel=3,
        )
        return _MovedModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
