"""Real image data, offline: scikit-learn's bundled 8x8 digits and a folder of the user's images.

The data baseline trains on them (``methods/data.py``) and the evaluation scores against the digits.
Light at import: scikit-learn and torch load when data is read.
"""

from dkdm_zoo.datasets.images import (
    DIGITS_NATIVE_RESOLUTION,
    DIGITS_NUM_CLASSES,
    ImageFolderDataset,
    load_dataset,
    load_digits_images,
    resize_digits,
)

__all__ = [
    "DIGITS_NATIVE_RESOLUTION",
    "DIGITS_NUM_CLASSES",
    "ImageFolderDataset",
    "load_dataset",
    "load_digits_images",
    "resize_digits",
]
