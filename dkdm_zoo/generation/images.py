"""Images in [-1, 1] to PNG files: grids (previews, samples.png) and one file per image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def save_grid(images: Any, path: str | Path, nrow: int | None = None) -> Path:
    """A PNG grid of images in [-1, 1] (nrow ~ sqrt(N))."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    save_image(((images.float() + 1) / 2).clamp(0, 1).cpu(), path, nrow=nrow)
    return path


def save_individual(images: Any, folder: str | Path) -> list[Path]:
    """Each image as folder/00000.png, ..."""
    from torchvision.utils import save_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:0{width}d}.png"
        save_image(((image.float() + 1) / 2).clamp(0, 1).cpu(), path)
        paths.append(path)
    return paths
