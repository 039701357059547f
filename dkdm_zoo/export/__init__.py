"""A run as a diffusers pipeline: the folder (``folder``: which pipeline class, the scheduler; ``stock``:
the sdxl / pixart / sd3 / flux / sana teachers' own classes for students of their networks), the
Hub model card (``card``) and the export of a finished run (``run``). The package's own pipeline
class, ``DKDMZooPipeline``, is ``dkdm_zoo.pipelines``: what a user imports to load an export."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# ``dkdm_zoo.export`` was one module before 0.2: its names still resolve, with a DeprecationWarning.
_MOVED = {"save_pipeline", "student_scheduler", "pipeline_kind", "SCHEDULE_KEYS"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"dkdm_zoo.export.{name} moved to dkdm_zoo.export.folder.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module("dkdm_zoo.export.folder"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
