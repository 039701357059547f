"""Evaluation of generated samples: feature network, Frechet distance, precision/recall, Inception FID.

Names are imported lazily (torch, scikit-learn and the optional FID libraries load on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "metrics",
    "frechet_distance": "metrics",
    "frechet_distance_from_stats": "metrics",
    "gaussian_stats": "metrics",
    "precision_recall": "metrics",
    "conditional_accuracy": "metrics",
    "DigitClassifier": "features",
    "load_digit_classifier": "features",
    "extract_features": "features",
    "InceptionFID": "fid_inception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
