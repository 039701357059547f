"""A folder or hub id names its own teacher family: read its manifest, ask the registry who accepts it.

Torch-free. The manifest is, in order: a dkdm-zoo run folder's ``run.json``; a pipeline's
``model_index.json`` (``_class_name`` "DDPMPipeline", "DiTPipeline", ...); a bare model's
``config.json`` ("UNet2DModel", ...). Each teacher family registers the class names it loads
(``register(..., accepts=(...))``, the same hook a plugin uses), so a plugin family is detected
exactly like a built-in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.teachers.sources import read_json, resolve_source

#: what a run folder "is" for ``accepts``: the run teacher registers it
RUN_MANIFEST = "run.json"
MANIFESTS = ("model_index.json", "config.json")


@dataclass(frozen=True)
class Detected:
    family: str
    source: str
    manifest: str  # the file that named the class
    class_name: str

    def describe(self) -> str:
        """The one line the CLI prints."""
        return f"teacher {self.source}: family '{self.family}' ({self.manifest} names {self.class_name})"


def manifest_class(text: str) -> tuple[str, str, Any]:
    """(file, class name, source) of a folder or hub id: run.json, model_index.json or config.json."""
    source = resolve_source(text)
    if not source.is_hub and source.repo_id is None:
        run = Path(source.location) / RUN_MANIFEST
        if run.is_file():
            read_json(run)  # a readable JSON object; the run teacher validates the rest
            return RUN_MANIFEST, RUN_MANIFEST, source
    for name in MANIFESTS:
        path = source.fetch(name)
        if path is None:
            continue
        class_name = read_json(path).get("_class_name")
        if not isinstance(class_name, str) or not class_name:
            raise UserError(
                f"{path} has no _class_name, so it does not say which teacher family loads it: "
                f"pass FAMILY@{text} (see `dkdm-zoo list teachers`)"
            )
        return name, class_name, source
    raise UserError(
        f"{source} has no {RUN_MANIFEST}, {' or '.join(MANIFESTS)} (searched {source.where()}), so it does "
        f"not say which teacher family loads it: pass FAMILY@{text} (see `dkdm-zoo list teachers`)"
    )


def detect_family(text: str, registry: Any) -> Detected:
    """The one registered teacher family that accepts the class ``text``'s manifest names."""
    manifest, class_name, _ = manifest_class(text)
    entries = registry.teachers_accepting(class_name)
    if not entries:
        known = ", ".join(e.name for e in registry.list("teachers"))
        accepted = sorted({c for e in registry.list("teachers") for c in e.accepts})
        raise UserError(
            f"{text}: {manifest} names {class_name}, which no teacher family loads (families: {known}; "
            f"detected classes: {', '.join(accepted)}): pass FAMILY@{text} if one of them fits"
        )
    if len(entries) > 1:
        names = ", ".join(e.name for e in entries)
        raise UserError(
            f"{text}: {manifest} names {class_name}, which several teacher families accept ({names}): "
            f"pass FAMILY@{text} to choose"
        )
    return Detected(entries[0].name, text, manifest, class_name)
