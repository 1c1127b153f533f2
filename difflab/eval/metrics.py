"""Distribution metrics on feature sets: FID, KID, improved precision/recall, Inception Score.

Every metric compares feature tensors ``[N, D]`` (one row per image) produced by any extractor of
:mod:`difflab.eval.features`, so "Inception" in the names is historical: the numbers are only
comparable between runs that used the same extractor, the same sample counts and the same
reference set. Everything is computed in float64 and returned as Python floats.

- :func:`frechet_distance` (FID): Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
  Rule Converge to a Local Nash Equilibrium" (arXiv:1706.08500), the FID definition
  ``d^2 = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``, the Fréchet (2-Wasserstein)
  distance of two Gaussians (Dowson & Landau 1982).
- :func:`kernel_inception_distance` (KID): Bińkowski et al. 2018, "Demystifying MMD GANs"
  (arXiv:1801.01401): the unbiased MMD^2 estimator (Gretton et al. 2012, JMLR, Lemma 6) with the
  kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets.
- :func:`precision_recall`: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models" (arXiv:1904.06991), eqs. (1)-(2): each set's manifold is the
  union of balls reaching every point's k-th nearest neighbour.
- :func:`inception_score` (IS): Salimans et al. 2016, "Improved Techniques for Training GANs"
  (arXiv:1606.03498), Sec. 4: ``exp(E_x KL(p(y|x) || p(y)))``.

What comes from torchmetrics and what is written here: torchmetrics 1.9 has FID, KID and IS as
stateful *image* metrics (``FrechetInceptionDistance(feature=module)`` etc.) whose maths lives in
private helpers, whose KID/IS subsets come from the global RNG, and whose FID takes the square
root of the non-symmetric product ``S_r S_g`` with a general eigensolver. The few lines of maths
for FID, KID and IS are therefore written here, on features, in float64, with an explicit
``torch.Generator``, and cross-checked against torchmetrics in ``tests/test_metrics.py``;
:func:`torchmetrics_fid` and :func:`torchmetrics_kid` run torchmetrics itself with a custom
feature module, for whoever wants its numbers. torchmetrics has no precision/recall of
Kynkäänniemi et al., so that one is written here from the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from difflab.eval.features import _eval_mode

__all__ = [
    "feature_metrics", "feature_statistics", "frechet_distance", "frechet_distance_from_statistics",
    "inception_score", "kernel_inception_distance", "knn_radii", "mmd2_unbiased",
    "polynomial_kernel", "precision_recall", "torchmetrics_fid", "torchmetrics_kid",
]  # fmt: skip


# --------------------------------------------------------------------------- input checks


def _as_features(features: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``features`` as a float64 ``[N, D]`` tensor; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor [N, D], got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(
            f"{name}: expected features [N, D] (one row per image), got shape "
            f"{tuple(features.shape)}; flatten or pool feature maps to one vector per image"
        )
    if features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"{name}: expected real-valued features, got dtype {features.dtype}")
    if features.numel() == 0:
        raise ValueError(
            f"{name}: empty, shape {tuple(features.shape)}; need N >= 1 rows of D >= 1"
        )
    features = features.detach().to(torch.float64)
    bad = ~torch.isfinite(features)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{name}: {len(rows)} of {len(features)} rows contain NaN or inf (first: row "
            f"{int(rows[0])}); check the images (NaN from a diverged sampler?) and the extractor"
        )
    return features


def _as_pair(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real features have D={real.shape[1]} but fake features have D={fake.shape[1]}; "
            "extract both sets with the same feature extractor"
        )
    return real, fake


def _check_fid_sample_size(count: int, dim: int, which: str) -> None:
    """FID needs more images than feature dimensions in each set.

    The sample covariance of ``N`` vectors has rank at most ``N - 1``, so with ``N <= D`` it is
    singular: the square-root term is then computed from a degenerate estimate and the result is
    dominated by the estimator's bias (which falls like ``1/N``; Chong & Forsyth 2020, "Effectively
    Unbiased FID and Inception Score and where to find them"). Hence ``N >= D + 1`` is enforced;
    for stable numbers use several times more, and compare FIDs only at equal ``N``.
    """
    if count < max(dim + 1, 2):
        raise ValueError(
            f"the {which} set has {count} samples but the features have D={dim} dimensions: FID "
            f"needs at least D + 1 = {dim + 1} samples per set (fewer make the covariance "
            "singular and the FID meaningless). Use more images, or lower-dimensional features "
            "(a smaller feature layer, or PixelFeatures with a smaller size)"
        )


# --------------------------------------------------------------------------- FID


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divided by ``N - 1``) of ``[N, D]``, float64.

    The covariance is formed from centred features, which avoids the cancellation of
    ``sum x x^T - N mu mu^T`` when the mean is large compared with the spread.
    """
    features = _as_features(features, "features")
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(features)}")
    mean = features.mean(dim=0)
    centred = features - mean
    return mean, centred.T @ centred / (len(features) - 1)


def _trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """``Tr((S1 S2)^(1/2))`` for symmetric positive semi-definite ``S1, S2`` (float64).

    ``S1 S2`` is not symmetric, so a general method (``scipy.linalg.sqrtm`` of the product, or
    torchmetrics' ``eigvals`` of it) can return complex values from round-off, and ``sqrtm``
    needs an ``eps * I`` offset when the product is singular. Instead: ``S1 S2 = R (R S2 R) R^-1`` with ``R = S1^(1/2)``, so
    ``S1 S2`` has the eigenvalues of the symmetric PSD matrix ``R S2 R`` (this holds for singular
    ``S1`` too, since ``AB`` and ``BA`` share their non-zero eigenvalues), and the trace is the sum
    of their square roots. Both steps use the symmetric eigensolver ``eigh``, which is backward
    stable; eigenvalues that round-off pushes slightly below zero are clamped to zero.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma1)
    root1 = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to round-off; make it exactly so
    return torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()


def frechet_distance_from_statistics(
    mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """Fréchet distance of two Gaussians, ``||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))``
    (Dowson & Landau 1982; the FID of Heusel et al. 2017 when the Gaussians are fitted to
    Inception features). Covariances must be symmetric PSD ``[D, D]``; computed in float64."""
    mean1, mean2 = (torch.as_tensor(m).to(torch.float64) for m in (mean1, mean2))
    cov1, cov2 = (torch.as_tensor(c).to(torch.float64) for c in (cov1, cov2))
    if mean1.ndim != 1 or mean2.shape != mean1.shape:
        raise ValueError(
            f"means must be vectors of the same length [D], got {tuple(mean1.shape)} "
            f"and {tuple(mean2.shape)}"
        )
    dim = mean1.shape[0]
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        if cov.shape != (dim, dim):
            raise ValueError(
                f"{name} must be [{dim}, {dim}] to match the means, got {tuple(cov.shape)}"
            )
        if not torch.isfinite(cov).all():
            raise ValueError(f"{name} contains NaN or inf")
        if not torch.allclose(cov, cov.T, rtol=1e-6, atol=1e-9 * float(cov.abs().max()) + 1e-12):
            raise ValueError(f"{name} is not symmetric; pass a covariance matrix")
    if not (torch.isfinite(mean1).all() and torch.isfinite(mean2).all()):
        raise ValueError("means contain NaN or inf")
    mean_term = (mean1 - mean2).square().sum()
    value = mean_term + cov1.trace() + cov2.trace() - 2 * _trace_sqrt_product(cov1, cov2)
    # The true distance is >= 0; round-off can leave a tiny negative number for equal inputs.
    return max(float(value), 0.0)


def frechet_distance(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets ``[N_r, D]`` and ``[N_g, D]`` (Heusel et al. 2017):
    fit a Gaussian to each set (mean, unbiased covariance) and return their Fréchet distance.

    Each set needs at least ``D + 1`` samples (see :func:`_check_fid_sample_size`); the estimate
    is biased upwards by roughly ``const/N``, so compare FIDs only at equal sample counts.
    """
    real, fake = _as_pair(real, fake)
    _check_fid_sample_size(len(real), real.shape[1], "real")
    _check_fid_sample_size(len(fake), fake.shape[1], "fake")
    return frechet_distance_from_statistics(*feature_statistics(real), *feature_statistics(fake))


# --------------------------------------------------------------------------- KID


def polynomial_kernel(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> torch.Tensor:
    """``k(x, y) = (gamma x.y + coef)^degree`` for all pairs, ``[N, M]``; ``gamma`` defaults to
    ``1 / D``, giving KID's cubic kernel ``(x.y / D + 1)^3`` (Bińkowski et al. 2018)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def mmd2_unbiased(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = polynomial_kernel,
) -> float:
    """Unbiased estimate of MMD^2 between the distributions of ``x [m, D]`` and ``y [n, D]``
    (Gretton et al. 2012, Lemma 6)::

        1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
            - 2/(mn) sum_{i,j} k(x_i, y_j)

    Its expectation is exactly MMD^2, so it is often slightly negative when the two
    distributions are equal. For ``x`` identical to ``y`` it equals ``2/m (mean_{i!=j} k(x_i, x_j)
    - mean_i k(x_i, x_i))``, which is ``<= 0`` and O(1/m) rather than 0.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_inception_distance(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): ``(mean, std)`` over ``subsets`` random draws of
    :func:`mmd2_unbiased` with the cubic polynomial kernel between ``subset_size`` real and
    ``subset_size`` fake features, each subset drawn without replacement.

    The defaults (100 subsets of 1000) are those of the paper's code and torchmetrics;
    ``subset_size=None`` means ``min(1000, N_real, N_fake)``. ``std`` is the spread over subsets
    (population std, as in the reference code and torchmetrics), a measure of the subsampling
    noise, not a standard error. Cost: ``3 * subsets * subset_size**2 * D`` multiply-adds (about
    25 s on one CPU core at the defaults with D = 2048). Subsets are drawn with ``generator``
    (default: a fresh one seeded with 0, so the result is deterministic). Unlike FID, KID is unbiased, so small sets
    are fine and numbers at different sample counts are comparable (in expectation).
    """
    real, fake = _as_pair(real, fake)
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    available = min(len(real), len(fake))
    if available < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} and {len(fake)}")
    if subset_size is None:
        subset_size = min(1000, available)
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    if subset_size > available:
        raise ValueError(
            f"subset_size={subset_size} but the sets hold {len(real)} real and {len(fake)} fake "
            f"samples; use subset_size <= {available} (or None), or more images"
        )
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    values = []
    for _ in range(subsets):
        pick_real = torch.randperm(len(real), generator=generator)[:subset_size]
        pick_fake = torch.randperm(len(fake), generator=generator)[:subset_size]
        values.append(
            mmd2_unbiased(real[pick_real.to(real.device)], fake[pick_fake.to(fake.device)])
        )
    values_array = np.asarray(values)
    return float(values_array.mean()), float(values_array.std())


# --------------------------------------------------------------------------- precision / recall
# Written here: torchmetrics has no improved precision/recall (Kynkäänniemi et al. 2019).


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for all pairs ``[N, M]``, via ``|a|^2 + |b|^2 - 2 a.b`` (float64)."""
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def knn_radii(
    features: torch.Tensor | np.ndarray, k: int = 3, batch_size: int = 256
) -> torch.Tensor:
    """Distance ``[N]`` from each feature vector to its ``k``-th nearest neighbour in the same set
    (the point itself excluded): the radii of Kynkäänniemi et al.'s manifold estimate."""
    features = _as_features(features, "features")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(features) < k + 1:
        raise ValueError(
            f"a {k}-nearest-neighbour radius needs at least k + 1 = {k + 1} samples, got "
            f"{len(features)}; use more images or a smaller k"
        )
    radii = []
    for chunk in features.split(batch_size):
        # kthvalue(k + 1): the smallest distance is the point to itself (zero).
        radii.append(_squared_distances(chunk, features).kthvalue(k + 1, dim=1).values)
    return torch.cat(radii).sqrt()


def _fraction_inside(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> float:
    """Fraction of ``queries`` inside at least one ball ``(centres_j, radii_j)`` (eq. 1)."""
    squared_radii = radii.square()
    inside = [
        (_squared_distances(chunk, centres) <= squared_radii[None, :]).any(dim=1)
        for chunk in queries.split(batch_size)
    ]
    return float(torch.cat(inside).double().mean())


def precision_recall(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    k: int = 3,
    batch_size: int = 256,
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2).

    Each set's manifold is estimated as the union of balls around its points, each ball reaching
    the point's ``k``-th nearest neighbour (eq. 1, ``f(phi, Phi)``). ``precision`` is the fraction
    of fake features inside the real manifold (are samples realistic?), ``recall`` the fraction of
    real features inside the fake manifold (is the data's variety covered?) (eq. 2). The paper uses
    ``k = 3`` and 50k samples per set; both numbers depend on ``k`` and on the sample counts, so
    keep them fixed when comparing. Distances are computed ``batch_size`` rows at a time.
    """
    real, fake = _as_pair(real, fake)
    real_radii = knn_radii(real, k, batch_size)
    fake_radii = knn_radii(fake, k, batch_size)
    return {
        "precision": _fraction_inside(fake, real, real_radii, batch_size),
        "recall": _fraction_inside(real, fake, fake_radii, batch_size),
    }


# --------------------------------------------------------------------------- Inception Score


def inception_score(
    *,
    logits: torch.Tensor | np.ndarray | None = None,
    probabilities: torch.Tensor | np.ndarray | None = None,
    splits: int = 10,
) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016, Sec. 4): ``exp(E_x KL(p(y|x) || p(y)))`` from a
    classifier's ``logits`` or ``probabilities`` ``[N, classes]`` (give exactly one).

    As in the paper's protocol (10 splits), the images are cut into ``splits`` contiguous,
    near-equal parts; in each, ``p(y)`` is the mean prediction and the score is computed; the
    result is ``(mean, std)`` over splits (population std, as in the reference code). The score
    lies in ``[1, classes]``: 1 when every prediction equals the marginal (e.g. uniform), the
    number of classes when predictions are confident and classes evenly covered. Unlike
    torchmetrics' InceptionScore, the images are not shuffled first: shuffle them yourself
    (with a seeded generator) if their order is sorted by class.
    """
    if (logits is None) == (probabilities is None):
        raise ValueError("give exactly one of logits= or probabilities= (as keyword arguments)")
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    if logits is not None:
        probs = _as_features(logits, "logits").softmax(dim=1)
    else:
        probs = _as_features(probabilities, "probabilities")
        sums = probs.sum(dim=1)
        if (probs < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise ValueError(
                "probabilities must be non-negative with rows summing to 1 (got row sums in "
                f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]); pass unnormalised "
                "scores as logits= instead"
            )
        probs = probs / sums[:, None]
    if len(probs) < splits:
        raise ValueError(
            f"{len(probs)} predictions cannot be cut into {splits} splits; use more images or "
            "fewer splits"
        )
    scores = []
    for part in probs.tensor_split(splits):
        marginal = part.mean(dim=0, keepdim=True)
        # KL(p(y|x) || p(y)) per image; xlogy makes 0 log 0 = 0 for classes never predicted.
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)
        scores.append(float(kl.mean().exp()))
    scores_array = np.asarray(scores)
    return float(scores_array.mean()), float(scores_array.std())


# --------------------------------------------------------------------------- all at once


def feature_metrics(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """FID, KID (mean and std), precision and recall of ``fake`` against ``real`` features, as
    one dict: ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``."""
    real, fake = _as_pair(real, fake)
    kid, kid_std = kernel_inception_distance(real, fake, kid_subsets, kid_subset_size, generator)
    return {"fid": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std} | precision_recall(
        real, fake, k
    )


# --------------------------------------------------------------------------- torchmetrics


def _feed(metric, images: torch.Tensor | Iterable, batch_size: int, **kwargs) -> None:
    """``metric.update(batch, **kwargs)`` for each batch of a tensor or an iterable of batches."""
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    with torch.no_grad():
        for batch in batches:
            metric.update(batch, **kwargs)


def torchmetrics_fid(
    feature: nn.Module,
    real: torch.Tensor | Iterable[torch.Tensor],
    fake: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 64,
) -> float:
    """FID computed by torchmetrics' ``FrechetInceptionDistance(feature=feature)``.

    ``feature`` is any ``nn.Module`` mapping a batch to ``[B, D]`` (give it a ``num_features``
    attribute, or torchmetrics probes it with a dummy 299x299 image); ``real``/``fake`` are what
    it takes (images, or features with ``PrecomputedFeatures(D)``), as a tensor cut into
    ``batch_size`` batches or an iterable of batches. The same sample-size rule as
    :func:`frechet_distance` applies.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    with _eval_mode(feature):  # the constructor may probe the module with a dummy image
        metric = FrechetInceptionDistance(feature=feature)
        _feed(metric, real, batch_size, real=True)
        _feed(metric, fake, batch_size, real=False)
    dim = metric.real_features_sum.shape[0]
    _check_fid_sample_size(int(metric.real_features_num_samples), dim, "real")
    _check_fid_sample_size(int(metric.fake_features_num_samples), dim, "fake")
    return float(metric.compute())


def torchmetrics_kid(
    feature: nn.Module,
    real: torch.Tensor | Iterable[torch.Tensor],
    fake: torch.Tensor | Iterable[torch.Tensor],
    subsets: int = 100,
    subset_size: int = 1000,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[float, float]:
    """KID ``(mean, std)`` computed by torchmetrics' ``KernelInceptionDistance(feature=feature)``.

    torchmetrics draws its subsets from the global torch RNG; this seeds a forked copy of it with
    ``seed`` so that the result is reproducible and the caller's RNG state is left untouched.
    """
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings(), _eval_mode(feature):
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features": we know
        metric = KernelInceptionDistance(feature=feature, subsets=subsets, subset_size=subset_size)
        _feed(metric, real, batch_size, real=True)
        _feed(metric, fake, batch_size, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
