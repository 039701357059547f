"""The shipped digit classifier and `evaluate` on real digits, noise and shuffled pixels."""

from __future__ import annotations

import pytest
import torch

from dkdm_zoo.datasets import load_digits_images
from dkdm_zoo.errors import UserError
from dkdm_zoo.evaluation.features import FEATURE_DIM, extract_features, load_digit_classifier, predict
from dkdm_zoo.evaluation.metrics import evaluate, frechet_distance


@pytest.fixture(scope="module")
def model():
    return load_digit_classifier()


@pytest.mark.parametrize("resolution", [8, 16])
def test_shipped_classifier_test_accuracy(model, resolution):
    images, labels = load_digits_images(resolution, "test", seed=0)
    accuracy = (predict(model, images) == labels).double().mean().item()
    assert accuracy > 0.95


def test_shapes_and_one_network_for_both_resolutions(model):
    x8, _ = load_digits_images(8)
    x16, _ = load_digits_images(16)
    f8, f16 = extract_features(model, x8[:32]), extract_features(model, x16[:32])
    assert f8.shape == f16.shape == (32, FEATURE_DIM) and f8.dtype == torch.float64
    assert model.logits(x8[:5]).shape == (5, 10)
    with pytest.raises(UserError, match="grayscale"):
        model.features(torch.zeros(2, 3, 8, 8))


def test_fd_separates_real_from_noise_and_shuffled_pixels(model):
    images, _ = load_digits_images(8)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(images), generator=gen)
    half_a, half_b = images[perm[: len(perm) // 2]], images[perm[len(perm) // 2 :]]
    noise = torch.rand(half_a.shape, generator=gen) * 2 - 1
    shuffled = half_a.flatten(1)[:, torch.randperm(64, generator=gen)].view_as(half_a)
    feats = {
        name: extract_features(model, x)
        for name, x in [("a", half_a), ("b", half_b), ("noise", noise), ("shuf", shuffled)]
    }
    real_vs_real = frechet_distance(feats["a"], feats["b"])
    assert frechet_distance(feats["noise"], feats["b"]) > 20 * real_vs_real
    assert frechet_distance(feats["shuf"], feats["b"]) > 20 * real_vs_real


def test_evaluate_against_data_and_against_samples(model):
    test_images, test_labels = load_digits_images(16, "test", seed=0)
    result = evaluate(test_images, "data", labels=test_labels, classifier=model)
    assert result["n_samples"] == 360 and result["n_reference"] == 1797
    assert result["precision"] > 0.95 and result["accuracy"] > 0.95
    assert set(result["per_class_accuracy"]) == set(range(10))

    noise = torch.rand(360, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    bad = evaluate(noise, test_images, classifier=model)  # data-free style: a tensor as reference
    assert bad["fd"] > 20 * result["fd"] and bad["recall"] < 0.1 and "accuracy" not in bad
    assert evaluate(test_images, test_images, classifier=model)["fd"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_refuses_bad_input(model):
    with pytest.raises(UserError, match="NaN"):
        evaluate(torch.full((4, 1, 8, 8), float("nan")), classifier=model)
    with pytest.raises(UserError, match="grayscale"):
        evaluate(torch.zeros(4, 3, 8, 8), classifier=model)
    with pytest.raises(UserError, match="reference"):
        evaluate(torch.zeros(4, 1, 8, 8), "imagenet", classifier=model)
