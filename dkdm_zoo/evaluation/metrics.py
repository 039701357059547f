"""Sample-quality metrics in a feature space, computed in float64. Pure functions on tensors.

- Frechet distance between Gaussian fits of two feature sets (FID's formula, any feature network);
- k-NN precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric");
- class-conditional accuracy of a classifier on samples generated for requested labels;
- `evaluate`: all of the above in the shipped digit classifier's feature space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dkdm_zoo.errors import UserError


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    if features.ndim != 2 or len(features) < 2:
        raise UserError(
            f"Frechet distance needs at least 2 feature vectors (N, D), got shape {tuple(features.shape)}"
        )
    x = features.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix; round-off negatives clipped to 0."""
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance_from_stats(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2): real by construction, so no tiny imaginary
    parts to discard and no failure on singular covariances (N < D).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_covmean
    return max(fd.item(), 0.0)  # the exact value is >= 0; clip round-off


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussian fits of two (N, D) feature sets."""
    if features_a.shape[-1] != features_b.shape[-1]:
        raise UserError(f"feature dimensions differ: {features_a.shape[-1]} vs {features_b.shape[-1]}")
    return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _kth_neighbour_radius(points: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each point to its k-th nearest other point (itself excluded)."""
    if len(points) <= k:
        raise UserError(f"precision/recall with k={k} needs more than {k} points per set, got {len(points)}")
    radii = [
        torch.cdist(points[i : i + chunk], points).kthvalue(k + 1, dim=1).values
        for i in range(0, len(points), chunk)
    ]
    return torch.cat(radii)


def _coverage(queries: Tensor, manifold: Tensor, radii: Tensor, chunk: int) -> float:
    """Fraction of queries inside at least one ball (manifold point, radius)."""
    inside = [
        (torch.cdist(queries[i : i + chunk], manifold) <= radii[None]).any(dim=1)
        for i in range(0, len(queries), chunk)
    ]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """k-NN precision (fake inside the real manifold) and recall (real inside the fake manifold).

    Each manifold is the union of balls around its points with radius = distance to the k-th nearest
    neighbour in the same set (Kynkaanniemi et al. 2019, k=3 as in the paper).
    """
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _kth_neighbour_radius(real, k, chunk), chunk)
    recall = _coverage(real, fake, _kth_neighbour_radius(fake, k, chunk), chunk)
    return precision, recall


def conditional_accuracy(predicted: Tensor, labels: Tensor) -> tuple[float, dict[int, float]]:
    """Overall and per-class accuracy of predicted classes against the requested labels."""
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise UserError(
            f"predictions {tuple(predicted.shape)} and labels {tuple(labels.shape)} must be matching (N,)"
        )
    correct = (predicted.long() == labels.long()).double()
    per_class = {int(c): correct[labels == c].mean().item() for c in labels.unique().tolist()}
    return correct.mean().item(), per_class


def evaluate(
    samples: Tensor,
    reference: str | Tensor = "data",
    labels: Tensor | None = None,
    k: int = 3,
    classifier=None,
) -> dict:
    """Quality of grayscale digit samples (N, 1, R, R) in [-1, 1] in the digit classifier's feature space.

    `reference` is "data" (every real digit at the samples' resolution) or a tensor of other images,
    e.g. the teacher's own samples for a data-free comparison. `labels` are the classes the samples were
    generated for (adds accuracy and per_class_accuracy). Samples are clamped to [-1, 1], as when saved.
    """
    from dkdm_zoo.evaluation.features import extract_features, load_digit_classifier, predict

    if samples.ndim != 4 or samples.shape[1] != 1:
        raise UserError(f"evaluate expects grayscale samples (N, 1, H, W), got shape {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise UserError("samples contain NaN or inf values: the model that produced them diverged")
    if isinstance(reference, str):
        if reference != "data":
            raise UserError(
                f"unknown reference {reference!r}: use 'data' (the real digits) or a tensor of images"
            )
        from dkdm_zoo.datasets import load_digits_images

        reference, _ = load_digits_images(resolution=samples.shape[-1], split="all")
    model = classifier if classifier is not None else load_digit_classifier()
    samples = samples.clamp(-1, 1)
    feats = extract_features(model, samples)
    ref_feats = extract_features(model, reference.clamp(-1, 1))
    precision, recall = precision_recall(ref_feats, feats, k=k)
    result = {
        "fd": frechet_distance(feats, ref_feats),
        "precision": precision,
        "recall": recall,
        "n_samples": len(samples),
        "n_reference": len(reference),
    }
    if labels is not None:
        acc, per_class = conditional_accuracy(predict(model, samples), labels.cpu())
        result["accuracy"], result["per_class_accuracy"] = acc, per_class
    return result
