"""Frechet distance, k-NN precision/recall and conditional accuracy against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.evaluation.metrics import (
    conditional_accuracy,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    precision_recall,
)


def _random_spd(d: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_identical_sets_have_zero_distance():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8 * x.var(0).sum().item())


def test_diagonal_gaussians_closed_form():
    # Diagonal covariances commute: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    gen = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(6, generator=gen).double(), torch.randn(6, generator=gen).double()
    a, b = torch.rand(6, generator=gen).double() + 0.5, torch.rand(6, generator=gen).double() * 3 + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = frechet_distance_from_stats(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-10)

    # The same from samples: the estimate converges to the closed form.
    n = 40_000
    x = mu1 + a.sqrt() * torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = mu2 + b.sqrt() * torch.randn(n, 6, generator=gen, dtype=torch.float64)
    assert frechet_distance(x, y) == pytest.approx(expected.item(), rel=0.03)


def test_full_covariances_match_scipy_sqrtm_formula():
    gen = torch.Generator().manual_seed(2)
    s1, s2 = _random_spd(12, gen), _random_spd(12, gen)
    mu1, mu2 = torch.randn(12, generator=gen).double(), torch.randn(12, generator=gen).double()
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())
    reference = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean.real)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance_from_stats(mu2, s2, mu1, s1) == pytest.approx(reference, rel=1e-8)


def test_singular_covariances_fewer_samples_than_dimensions():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(10, 64, generator=gen), torch.randn(10, 64, generator=gen) + 1
    mu, sigma = gaussian_stats(x)
    assert torch.linalg.matrix_rank(sigma) < 64
    fd = frechet_distance(x, y)
    assert np.isfinite(fd) and fd > frechet_distance(x, x + 1e-3)
    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(x[:1], y)


def test_precision_recall_self_far_and_half():
    gen = torch.Generator().manual_seed(4)
    real = torch.randn(400, 8, generator=gen)
    assert precision_recall(real, real, k=3, chunk=64) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # Half of the fakes are real points (inside), half are far away (outside): precision 1/2.
    fake = torch.cat([real[:200], far[:200]])
    precision, recall = precision_recall(real, fake)
    assert precision == 0.5
    # The fake manifold covers at least the 200 real points it contains.
    assert 0.5 <= recall < 1.0


def test_precision_recall_is_chunk_independent():
    gen = torch.Generator().manual_seed(5)
    real, fake = torch.randn(300, 4, generator=gen), torch.randn(250, 4, generator=gen) * 1.5
    assert precision_recall(real, fake, chunk=7) == precision_recall(real, fake, chunk=4096)


def test_conditional_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    overall, per_class = conditional_accuracy(predicted, labels)
    assert overall == pytest.approx(4 / 6)
    assert per_class == {0: 0.5, 1: pytest.approx(2 / 3), 2: 1.0}
