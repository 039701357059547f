"""The feature network for evaluation: a small CNN digit classifier shipped in dkdm_zoo/assets.

Images of any resolution (1 channel, [-1, 1]) are resized to one canonical resolution first, so the
same weights serve 8x8 and 16x16 teachers. `features` is the penultimate layer (the space where
Frechet distance and precision/recall are measured); `logits` scores the 10 digit classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from dkdm_zoo.datasets import DIGITS_NUM_CLASSES, resize_digits
from dkdm_zoo.errors import UserError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DIGITS_CLASSIFIER_FILE = "digits_classifier.safetensors"
CANONICAL_RESOLUTION = 8  # the digits' native resolution: larger inputs are antialiased down
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """conv(32)x2 -> pool -> conv(64)x2 -> pool -> fc(128) -> fc(10) on 8x8 inputs; ~99k parameters."""

    def __init__(
        self, width: int = 32, feature_dim: int = FEATURE_DIM, num_classes: int = DIGITS_NUM_CLASSES
    ):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4 -> 2
            nn.Flatten(),
            nn.Linear(2 * w * 4, feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def _prepare(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise UserError(
                f"the digit classifier expects grayscale images (N, 1, H, W) in [-1, 1], got shape {tuple(images.shape)}"
            )
        dtype = self.head.weight.dtype
        return resize_digits(images.to(device=self.head.weight.device, dtype=dtype), CANONICAL_RESOLUTION)

    def features(self, images: Tensor) -> Tensor:
        """(N, 1, H, W) in [-1, 1] -> (N, FEATURE_DIM) penultimate activations."""
        return self.body(self._prepare(images))

    def logits(self, images: Tensor) -> Tensor:
        """(N, 1, H, W) in [-1, 1] -> (N, 10) class logits."""
        return self.head(self.dropout(self.features(images)))

    forward = logits


def load_digit_classifier(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> DigitClassifier:
    """Load the shipped digit classifier (or one at `path`) with safetensors, in eval mode, frozen."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else ASSETS_DIR / DIGITS_CLASSIFIER_FILE
    if not path.is_file():
        raise UserError(
            f"digit classifier weights not found at {str(path)!r}: rebuild them with "
            "`python tools/train_digit_classifier.py --out dkdm_zoo/assets`"
        )
    model = DigitClassifier()
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def extract_features(model: DigitClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Features of many images, batched; returned on CPU in float64 for the metrics."""
    out = [
        model.features(images[i : i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


@torch.no_grad()
def predict(model: DigitClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted class of each image (N,) int64, on CPU."""
    out = [
        model.logits(images[i : i + batch_size]).argmax(-1).cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
