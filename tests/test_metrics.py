"""FID / KID / precision-recall / IS on feature sets: closed forms, torchmetrics cross-checks,
toy cases with known answers, determinism and error messages."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.utils.data import DataLoader, TensorDataset

from difflab.eval.features import PixelFeatures, PrecomputedFeatures, extract_features
from difflab.eval.metrics import (
    feature_metrics,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_score,
    kernel_inception_distance,
    knn_radii,
    mmd2_unbiased,
    polynomial_kernel,
    precision_recall,
    torchmetrics_fid,
    torchmetrics_kid,
)

F64 = torch.float64


def gaussian(n, mean, variances, seed):
    """``n`` samples of N(mean, diag(variances)), float64."""
    g = torch.Generator().manual_seed(seed)
    mean, variances = torch.as_tensor(mean, dtype=F64), torch.as_tensor(variances, dtype=F64)
    return mean + torch.randn(n, len(mean), generator=g, dtype=F64) * variances.sqrt()


def mixture(n_per_mode, modes, seed, dim=2, spread=1.0):
    """Well-separated Gaussian modes: mode i sits at 20 * (1 + i // dim) on axis i % dim."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for i in modes:
        centre = torch.zeros(dim, dtype=F64)
        centre[i % dim] = 20.0 * (1 + i // dim)
        parts.append(centre + spread * torch.randn(n_per_mode, dim, generator=g, dtype=F64))
    return torch.cat(parts)


# --------------------------------------------------------------------------- FID


def test_identical_sets_give_zero_fid():
    x = gaussian(300, [1.0, -2.0, 0.0], [1.0, 4.0, 0.25], seed=0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_exact_statistics_is_the_closed_form():
    mean1, mean2 = (
        torch.tensor([0.0, 1.0, 2.0], dtype=F64),
        torch.tensor([1.0, 1.0, 0.0], dtype=F64),
    )
    s1, s2 = torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.tensor([4.0, 0.5, 3.0], dtype=F64)
    closed_form = (mean1 - mean2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    value = frechet_distance_from_statistics(mean1, torch.diag(s1), mean2, torch.diag(s2))
    assert value == pytest.approx(float(closed_form), rel=1e-12)


def test_trace_square_root_matches_scipy_sqrtm_on_full_covariances():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 6, generator=g, dtype=F64), torch.randn(6, 6, generator=g, dtype=F64)
    c1, c2 = a @ a.T + 0.1 * torch.eye(6, dtype=F64), b @ b.T  # full, correlated covariances
    mean1, mean2 = torch.randn(6, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())
    reference = float((mean1 - mean2).square().sum() + c1.trace() + c2.trace()) - 2 * float(
        np.trace(root).real
    )
    assert frechet_distance_from_statistics(mean1, c1, mean2, c2) == pytest.approx(
        reference, rel=1e-9
    )


def test_fid_of_sampled_gaussians_matches_the_analytic_distance():
    # Diagonal covariances: FID = ||mu1 - mu2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2)) = 3.593.
    mean = torch.tensor([1.0, 0.5, 0.0, -1.0], dtype=F64)
    s1 = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=F64)
    s2 = torch.tensor([2.0, 1.0, 0.5, 4.0], dtype=F64)
    analytic = float(mean.square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    n = 20_000
    estimate = frechet_distance(gaussian(n, torch.zeros(4), s1, 0), gaussian(n, mean, s2, 1))
    # Tolerance from the sample size (delta method): the mean term ||m1 - m2||^2 has variance
    # 4 sum mu^2 (s1 + s2) / n, each variance term (sqrt(s1) - sqrt(s2))^2 has variance
    # sum (1 - sqrt(s2/s1))^2 2 s1^2 / n + (same with 1 <-> 2). That standard deviation is
    # 0.049 here (100 seeds gave an empirical std of 0.049 and a bias of +0.011, from the
    # off-diagonal covariance noise); 5 standard deviations leave room for the bias.
    variance = (4 * mean.square() * (s1 + s2) / n).sum() + (
        (1 - (s2 / s1).sqrt()) ** 2 * 2 * s1**2 / n + (1 - (s1 / s2).sqrt()) ** 2 * 2 * s2**2 / n
    ).sum()
    assert abs(estimate - analytic) < 5 * math.sqrt(float(variance))


def test_feature_statistics_match_numpy_even_far_from_the_origin():
    x = gaussian(500, [1e6, -1e6, 3.0], [1.0, 0.01, 4.0], seed=22)  # mean >> spread
    mean, cov = feature_statistics(x)
    assert torch.allclose(mean, x.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(cov.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-6, atol=1e-9)


def test_fid_agrees_with_torchmetrics_given_the_same_features():
    real = gaussian(400, [0.0] * 8, [1.0] * 8, seed=2) @ torch.randn(
        8, 8, generator=torch.Generator().manual_seed(3), dtype=F64
    )
    fake = gaussian(300, [0.5] * 8, [2.0] * 8, seed=4)
    ours = frechet_distance(real, fake)
    theirs = torchmetrics_fid(PrecomputedFeatures(8), real, fake, batch_size=128)
    assert ours > 1.0 and theirs == pytest.approx(ours, rel=1e-3)


def test_fid_refuses_fewer_samples_than_dimensions():
    small, big = gaussian(16, [0.0] * 16, [1.0] * 16, 0), gaussian(100, [0.0] * 16, [1.0] * 16, 1)
    with pytest.raises(ValueError, match=r"real set has 16 samples .* D=16 .* D \+ 1 = 17"):
        frechet_distance(small, big)
    with pytest.raises(ValueError, match="more images, or lower-dimensional features"):
        frechet_distance(big, small)
    frechet_distance(gaussian(17, [0.0] * 16, [1.0] * 16, 2), big)  # D + 1 is enough
    with pytest.raises(ValueError, match=r"fake set has 16 samples"):
        torchmetrics_fid(PrecomputedFeatures(16), big, small)


# --------------------------------------------------------------------------- KID


def test_kid_of_identical_sets_is_the_unbiased_estimator_offset():
    # With every subset the whole set, x == y gives 2/m (mean_{i!=j} k - mean_i k(x_i, x_i)):
    # O(1/m) and <= 0, not exactly 0 (the cross term keeps the diagonal).
    x = gaussian(200, [0.0] * 5, [1.0] * 5, seed=5)
    mean, std = kernel_inception_distance(x, x, subsets=3, subset_size=200)
    kernel = polynomial_kernel(x, x)
    off_diagonal = (kernel.sum() - kernel.trace()) / (200 * 199)
    expected = float(2 / 200 * (off_diagonal - kernel.diagonal().mean()))
    assert mean == pytest.approx(expected, rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)
    assert -2 * float(kernel.diagonal().mean()) / 200 < mean <= 0


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    x = gaussian(1000, [1.0] * 6, [1.0] * 6, seed=6)
    y = gaussian(1000, [1.0] * 6, [1.0] * 6, seed=7)
    mean, std = kernel_inception_distance(x, y, subsets=50, subset_size=200)
    # std is the spread of single-subset values; within a few of them from 0 means "no signal".
    assert abs(mean) < 3 * std
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=50, subset_size=200)
    assert shifted > 10 * std  # ...while a real difference stands far out of that noise


def test_kid_agrees_with_torchmetrics():
    real = gaussian(300, [0.0] * 10, [1.0] * 10, seed=8)
    fake = gaussian(300, [0.3] * 10, [1.5] * 10, seed=9)
    feature = PrecomputedFeatures(10)
    # Subsets of the whole set make the subset draw irrelevant: the numbers must agree exactly.
    ours = kernel_inception_distance(real, fake, subsets=2, subset_size=300)
    theirs = torchmetrics_kid(feature, real, fake, subsets=2, subset_size=300)
    assert theirs[0] == pytest.approx(ours[0], rel=1e-9)
    # Random subsets: different draws, same estimator, so the means agree within the noise.
    ours = kernel_inception_distance(real, fake, subsets=40, subset_size=100)
    theirs = torchmetrics_kid(feature, real, fake, subsets=40, subset_size=100, seed=123)
    assert abs(ours[0] - theirs[0]) < 4 * max(ours[1], theirs[1]) / math.sqrt(40) * math.sqrt(2)


def test_mmd_handles_unequal_set_sizes():
    x, y = gaussian(50, [0.0] * 3, [1.0] * 3, 10), gaussian(80, [2.0] * 3, [1.0] * 3, 11)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    by_hand = (
        (k_xx.sum() - k_xx.trace()) / (50 * 49)
        + (k_yy.sum() - k_yy.trace()) / (80 * 79)
        - 2 * k_xy.sum() / (50 * 80)
    )
    assert mmd2_unbiased(x, y) == pytest.approx(float(by_hand), rel=1e-12)


# --------------------------------------------------------------------------- precision / recall


def test_identical_sets_have_full_precision_and_recall():
    x = mixture(50, range(6), seed=12, dim=3)
    assert precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}


def test_far_away_set_has_zero_precision_and_recall():
    real = mixture(100, range(4), seed=13)
    assert precision_recall(real, real + 1000.0) == {"precision": 0.0, "recall": 0.0}


def test_a_subset_of_half_the_modes_has_half_the_recall():
    real = mixture(100, range(10), seed=14)
    # Exactly the real points of 5 modes: every fake is a real point, and every real point of a
    # covered mode is a fake ball's centre, while the other 5 modes are far from every ball.
    assert precision_recall(real, real[:500]) == {"precision": 1.0, "recall": 0.5}
    # Fresh samples of 5 modes: k-NN balls cover ~97% of a mode in 2-d, so recall ~0.5 * 0.97.
    fake = mixture(200, range(5), seed=15)
    result = precision_recall(real, fake)
    assert result["precision"] > 0.9 and abs(result["recall"] - 0.5) < 0.05
    full = precision_recall(real, mixture(100, range(10), seed=16))["recall"]
    assert result["recall"] / full == pytest.approx(0.5, abs=0.03)


def test_knn_radii_exclude_the_point_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=F64)
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=3).tolist() == [7.0, 6.0, 4.0, 7.0]


# --------------------------------------------------------------------------- Inception Score


def test_inception_score_extremes():
    classes = 10
    uniform = torch.full((100, classes), 1.0 / classes)
    assert inception_score(probabilities=uniform) == pytest.approx((1.0, 0.0), abs=1e-9)
    assert inception_score(logits=torch.zeros(100, classes))[0] == pytest.approx(1.0, abs=1e-9)
    confident = torch.eye(classes)[torch.arange(100) % classes]  # each split sees every class once
    assert inception_score(probabilities=confident) == pytest.approx((classes, 0.0), rel=1e-9)
    assert inception_score(logits=confident * 50, splits=1)[0] == pytest.approx(classes, rel=1e-6)
    # Confident but always the same class: no diversity, score 1.
    assert inception_score(probabilities=torch.eye(classes)[[3] * 40])[0] == pytest.approx(1.0)


def test_inception_score_agrees_with_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    logits = torch.randn(200, 7, generator=torch.Generator().manual_seed(17), dtype=F64) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = InceptionScore(feature=PrecomputedFeatures(7), splits=1)
        metric.update(logits)
        theirs = float(metric.compute()[0])  # one split: their shuffle does not matter (std: NaN)
    assert inception_score(logits=logits, splits=1)[0] == pytest.approx(theirs, rel=1e-9)


# --------------------------------------------------------------------------- features


def test_extract_features_is_independent_of_batching_and_input_form():
    g = torch.Generator().manual_seed(18)
    images = torch.rand(37, 3, 16, 16, generator=g) * 2 - 1
    extractor = PixelFeatures(size=4)
    whole = extract_features(extractor, images, batch_size=64, progress=False)
    assert whole.shape == (37, 48)
    assert torch.equal(extract_features(extractor, images, batch_size=5, progress=False), whole)
    loader = DataLoader(TensorDataset(images, torch.zeros(37)), batch_size=8)
    assert torch.equal(extract_features(extractor, loader, batch_size=10, progress=False), whole)
    singles = [{"image": image} for image in images]  # difflab datasets yield dicts
    assert torch.equal(extract_features(extractor, singles, batch_size=7, progress=False), whole)
    by_lambda = extract_features(lambda x: x.mean((2, 3)), images, 9, progress=False)
    assert torch.equal(by_lambda, images.mean((2, 3)))
    # A module left in training mode runs in eval mode (BatchNorm would otherwise use batch
    # statistics) and gets its mode back.
    network = torch.nn.Sequential(torch.nn.BatchNorm2d(3), PixelFeatures(size=2)).train()
    network[0].running_mean.fill_(0.5)
    features = extract_features(network, images, batch_size=3, progress=False)
    assert torch.allclose(features, PixelFeatures(size=2)((images - 0.5) / math.sqrt(1 + 1e-5)))
    assert network.training and network[0].training


def test_extract_features_errors_name_the_fix():
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match=r"\[-1, 1\] \(they look like \[0, 255\]"):
        extract_features(PixelFeatures(), images * 127.5 + 127.5, progress=False)
    with pytest.raises(ValueError, match=r"images\.float\(\) / 127\.5 - 1"):
        extract_features(PixelFeatures(), images.to(torch.uint8), progress=False)
    with pytest.raises(ValueError, match=r"must return \[4, D\]"):
        extract_features(lambda x: x, images, progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract_features(PixelFeatures(), [], progress=False)


# --------------------------------------------------------------------------- determinism, bad input


def test_metrics_are_deterministic():
    real, fake = mixture(60, range(5), seed=19, dim=4), mixture(60, range(3), seed=20, dim=4)
    first, second = (
        feature_metrics(real, fake, kid_subsets=10),
        feature_metrics(real, fake, kid_subsets=10),
    )
    assert first == second and set(first) == {"fid", "kid", "kid_std", "precision", "recall"}
    other = kernel_inception_distance(
        real, fake, subsets=10, subset_size=50, generator=torch.Generator().manual_seed(1)
    )
    assert other != kernel_inception_distance(real, fake, subsets=10, subset_size=50)
    assert frechet_distance(real.float(), fake.numpy()) == pytest.approx(first["fid"], rel=1e-6)


def test_bad_features_give_clear_errors():
    good = gaussian(50, [0.0] * 4, [1.0] * 4, 21)
    broken = good.clone()
    broken[7, 2] = float("nan")
    for metric in (frechet_distance, kernel_inception_distance, precision_recall):
        with pytest.raises(
            ValueError, match=r"fake features: 1 of 50 rows contain NaN or inf .*row 7"
        ):
            metric(good, broken)
        with pytest.raises(
            ValueError, match="D=4 but fake features have D=3.*same feature extractor"
        ):
            metric(good, good[:, :3])
        with pytest.raises(ValueError, match=r"expected features \[N, D\]"):
            metric(good, good[None])
    with pytest.raises(ValueError, match=r"subset_size=100 .* use subset_size <= 50"):
        kernel_inception_distance(good, good, subset_size=100)
    with pytest.raises(ValueError, match=r"k \+ 1 = 4 samples, got 3"):
        precision_recall(good, good[:3])
    with pytest.raises(ValueError, match="exactly one of logits= or probabilities="):
        inception_score()
    with pytest.raises(ValueError, match="rows summing to 1.*as logits= instead"):
        inception_score(probabilities=torch.rand(20, 5) + 0.1)
    with pytest.raises(ValueError, match="cannot be cut into 10 splits"):
        inception_score(logits=torch.randn(5, 3))
