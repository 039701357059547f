"""The digits dataset (scikit-learn, offline) and the image-folder loader."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from dkdm_zoo.datasets import ImageFolderDataset, load_dataset, load_digits_images
from dkdm_zoo.errors import UserError


@pytest.mark.parametrize("resolution", [8, 16])
def test_digits_shapes_range_and_labels(resolution):
    images, labels = load_digits_images(resolution)
    assert images.shape == (1797, 1, resolution, resolution) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.long
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_native_values_are_the_sklearn_counts():
    from sklearn.datasets import load_digits

    images, labels = load_digits_images(8)
    raw = load_digits()
    assert torch.equal((images[:, 0] + 1) * 8, torch.as_tensor(raw.images, dtype=torch.float32))
    assert torch.equal(labels, torch.as_tensor(raw.target))


def test_splits_are_disjoint_stratified_and_deterministic():
    x_all, _ = load_digits_images(8, "all")
    x_tr, y_tr = load_digits_images(8, "train", seed=0)
    x_te, y_te = load_digits_images(8, "test", seed=0)
    assert len(x_tr) + len(x_te) == len(x_all) and abs(len(x_te) / len(x_all) - 0.2) < 0.01
    # Disjoint and covering: every image of "all" is in exactly one split (rows compared exactly).
    key = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    assert key(x_tr).isdisjoint(key(x_te)) and key(x_tr) | key(x_te) == key(x_all)
    # Stratified: each class keeps its share of the test split within one image.
    counts_all = torch.bincount(torch.cat([y_tr, y_te]), minlength=10).double()
    assert ((torch.bincount(y_te, minlength=10) - 0.2 * counts_all).abs() <= 1).all()
    again, _ = load_digits_images(8, "test", seed=0)
    other, _ = load_digits_images(8, "test", seed=1)
    assert torch.equal(again, x_te) and not torch.equal(other, x_te)


def test_upsampled_16_is_consistent_with_8():
    x8, _ = load_digits_images(8)
    x16, _ = load_digits_images(16)
    back = F.avg_pool2d(x16, 2)
    roundtrip = (back - x8).abs().mean()
    between_digits = (x8 - x8.roll(1, dims=0)).abs().mean()
    assert roundtrip < 0.2 * between_digits
    # Each downsampled image is closest to its own original among all 1,797.
    nearest = torch.cdist(back.flatten(1), x8.flatten(1)).argmin(1)
    assert (nearest == torch.arange(len(x8))).double().mean() > 0.99


def test_bad_arguments_and_missing_sklearn(monkeypatch):
    with pytest.raises(UserError, match="split"):
        load_digits_images(8, "validation")
    with pytest.raises(UserError, match="resolution"):
        load_digits_images(0)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import of sklearn now fails
    with pytest.raises(UserError, match=r"pip install 'dkdm-zoo\[eval\]'"):
        load_digits_images(8)


def _write_images(folder, n, size, colour):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, colour).save(folder / f"{i}.png")


def test_image_folder_with_class_subfolders(tmp_path):
    _write_images(tmp_path / "cats", 2, (20, 12), (255, 0, 0))
    _write_images(tmp_path / "dogs", 3, (12, 20), (0, 0, 0))
    ds = ImageFolderDataset(tmp_path, resolution=8)
    assert len(ds) == 5 and ds.classes == ["cats", "dogs"]
    image, label = ds[0]
    assert image.shape == (3, 8, 8) and label == 0
    # Pure red -> (1, -1, -1) in [-1, 1].
    assert torch.allclose(image, torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 8, 8), atol=1e-6)
    image, label = ds[4]
    assert label == 1 and torch.allclose(image, torch.full((3, 8, 8), -1.0))
    grey, _ = ImageFolderDataset(tmp_path, resolution=16, channels=1)[0]
    assert grey.shape == (1, 16, 16)


def test_flat_folder_unlabelled_and_load_dataset(tmp_path):
    _write_images(tmp_path, 2, (10, 10), (255, 255, 255))
    ds = load_dataset(tmp_path, resolution=4)
    assert len(ds) == 2 and ds[1][1] == -1 and torch.allclose(ds[1][0], torch.ones(3, 4, 4))
    digits = load_dataset("digits", resolution=16, split="train")
    image, label = digits[0]
    assert len(digits) == 1437 and image.shape == (1, 16, 16) and 0 <= int(label) < 10
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("cifar10", resolution=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", resolution=8)
