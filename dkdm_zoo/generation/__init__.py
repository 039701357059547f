"""Images from a SOURCE: a registered teacher (NAME, FAMILY@PATH, a folder or hub id) or a run folder
(``sources``), and PNG files of them (``images``). `sample`, `eval`, the end-of-run report and the
previews go through here; the sampler itself is ``dkdm_zoo.sampling``. Light at import."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageSource": "sources",
    "load_source": "sources",
    "save_grid": "images",
    "save_individual": "images",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
