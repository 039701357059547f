"""Images in [-1, 1] to PNG files: grids (previews, samples.png) and one file per image.
Grayscale images stay grayscale (mode "L"); previews of small images are enlarged, nearest-neighbour,
so that an 8x8 digit is readable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: a preview grid is at least this wide (small images enlarged by a whole factor, nearest-neighbour)
PREVIEW_WIDTH = 256


def save_grid(images: Any, path: str | Path, nrow: int | None = None, min_width: int = 0) -> Path:
    """A PNG grid of images in [-1, 1] (nrow ~ sqrt(N)); ``min_width``: enlarge each image by the
    smallest whole factor that makes the grid at least that wide (nearest-neighbour, no blur)."""
    import torch
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = ((images.float() + 1) / 2).clamp(0, 1).cpu()
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    width = min(nrow, len(images)) * images.shape[-1]
    if min_width and width < min_width:
        factor = math.ceil(min_width / width)
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    grid = make_grid(images, nrow=nrow)  # 3 channels, whatever came in
    _write_png(grid[:1] if images.shape[1] == 1 else grid, path)
    return path


def save_individual(images: Any, folder: str | Path) -> list[Path]:
    """Each image as folder/00000.png, ... (grayscale as mode "L")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:0{width}d}.png"
        _write_png(((image.float() + 1) / 2).clamp(0, 1).cpu(), path)
        paths.append(path)
    return paths


def _write_png(image: Any, path: Path) -> None:
    """A (C, H, W) image in [0, 1] as a PNG: 1 channel -> "L", 3 -> "RGB" (rounded as torchvision does)."""
    import torch
    from PIL import Image

    array = image.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    if array.shape[0] == 1:
        Image.fromarray(array[0], mode="L").save(path)
    else:
        Image.fromarray(array.transpose(1, 2, 0)).save(path)
