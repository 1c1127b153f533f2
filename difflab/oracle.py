"""An exact denoiser for Gaussian-mixture data, to test samplers and guidance without training.

For x0 ~ sum_k w_k N(mu_k, S_k), the noised marginal is again a mixture,
p_t(x) = sum_k w_k N(a mu_k, a^2 S_k + s^2 I) with a = sqrt(abar_t), s = sqrt(1 - abar_t), so its
score is available in closed form and the optimal noise predictor (Tweedie's formula; Song et al.
2021, Eq. 4 / Vincent 2011) is eps*(x_t, t) = -s * grad_x log p_t(x_t). A sampler driven by eps*
should reproduce the mixture up to its own discretisation error, which this module measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from difflab.schedules import NoiseSchedule, make_schedule, prediction_from_x0_and_eps


@dataclass(frozen=True)
class GaussianMixture:
    """A Gaussian mixture: ``weights`` [K], ``means`` [K, D], ``covariances`` [K, D, D] (float64)."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    @property
    def num_components(self) -> int:
        return self.weights.numel()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` exact samples; returns (x [n, D] float64, component labels [n])."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)
        x = self.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z)
        return x, labels

    def _per_level(self, x_t: torch.Tensor, alpha_bar: torch.Tensor, fn) -> torch.Tensor:
        """Apply ``fn(x_group, a)`` to the samples grouped by noise level (samplers pass one
        level per batch, so the per-component factorisations are computed once per call)."""
        x = x_t.to(torch.float64)
        alpha_bar = alpha_bar.to(torch.float64).reshape(-1).expand(x.shape[0])
        levels, index = torch.unique(alpha_bar, return_inverse=True)
        if levels.numel() == 1:
            return fn(x, levels[0])
        parts = [fn(x[index == i], level) for i, level in enumerate(levels)]
        out = torch.empty(x.shape[0], *parts[0].shape[1:], dtype=torch.float64)
        for i, part in enumerate(parts):
            out[index == i] = part
        return out

    def _noised_factors(self, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Component means [K, D] and Cholesky factors [K, D, D] of p_t at one noise level."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        covs = alpha_bar * self.covariances + (1 - alpha_bar) * eye
        return alpha_bar.sqrt() * self.means, torch.linalg.cholesky(covs)

    def log_joint(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """log(w_k N(x_t; a mu_k, a^2 S_k + s^2 I)) for each component: [B, K]."""

        def at_level(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            means, chol = self._noised_factors(level)
            diff = x[:, None, :] - means[None]  # [B, K, D]
            white = torch.linalg.solve_triangular(
                chol[None], diff.unsqueeze(-1), upper=False
            ).squeeze(-1)
            logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # [K]
            maha = white.pow(2).sum(-1)
            return torch.log(self.weights)[None] - 0.5 * (
                maha + logdet[None] + self.dim * math.log(2 * math.pi)
            )

        return self._per_level(x_t, alpha_bar, at_level)

    def log_posterior(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """log p(k | x_t) at noise level alpha_bar: [B, K] (differentiable in x_t)."""
        joint = self.log_joint(x_t, alpha_bar)
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)

    def score(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x_t) in closed form: sum_k p(k | x_t) C_k^{-1} (a mu_k - x_t)."""

        def at_level(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            means, chol = self._noised_factors(level)
            diff = means[None] - x[:, None, :]  # [B, K, D]
            per_component = torch.cholesky_solve(diff.unsqueeze(-1), chol[None]).squeeze(-1)
            resp = self.log_posterior(x, level).exp()
            return (resp.unsqueeze(-1) * per_component).sum(1)

        return self._per_level(x_t, alpha_bar, at_level)

    def component(self, k: int) -> GaussianMixture:
        """The single component ``k`` as a one-component mixture (a class-conditional model)."""
        return GaussianMixture(
            self.weights.new_ones(1), self.means[k : k + 1], self.covariances[k : k + 1]
        )

    def denoiser(
        self, schedule: NoiseSchedule
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact model ``model(x_t, t)`` for ``schedule``, in its declared prediction type."""

        def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha_bar = schedule.alpha_bar(t).to(torch.float64)
            eps = -(1 - alpha_bar).sqrt()[:, None] * self.score(x_t, alpha_bar)
            a = alpha_bar[:, None]
            x = x_t.to(torch.float64)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            return prediction_from_x0_and_eps(x0, eps, a, schedule.prediction_type).to(x_t.dtype)

        return model


def example_mixture(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """The mixture the tests and the oracle benchmark use.

    2-D: three anisotropic, well-separated components with unequal weights (0.5, 0.3, 0.2).
    Other D: four components with random means of norm ~2.5 and random covariances with
    eigenvalues in [0.01, 0.06], drawn from ``seed``. Component standard deviations are small
    against the separations, so assigning a sample to its most probable component is
    practically error-free and per-component statistics are well defined.
    """
    if dim == 2:
        weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
        means = torch.tensor([[-1.2, -0.6], [1.2, -0.6], [0.0, 1.2]], dtype=torch.float64)
        covariances = torch.tensor(
            [
                [[0.040, 0.015], [0.015, 0.020]],
                [[0.020, -0.010], [-0.010, 0.030]],
                [[0.050, 0.000], [0.000, 0.010]],
            ],
            dtype=torch.float64,
        )
        return GaussianMixture(weights, means, covariances)
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}.")
    g = torch.Generator().manual_seed(seed)
    k = 4
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    directions = torch.randn(k, dim, generator=g, dtype=torch.float64)
    means = 2.5 * directions / directions.norm(dim=1, keepdim=True)
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    eigenvalues = 0.01 + 0.05 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    covariances = q @ torch.diag_embed(eigenvalues) @ q.transpose(1, 2)
    return GaussianMixture(weights, means, covariances)


@dataclass
class MixtureFit:
    """How far a set of samples is from a mixture, per statistic and in standard errors.

    Attributes:
        weight_error: total variation between the empirical and true component weights.
        mean_error: the largest distance between a component's sample mean and its true mean,
            in units of the component's RMS standard deviation.
        cov_error: the largest relative Frobenius error of a component's sample covariance.
        chi2: the mean squared z-score of all weights, mean coordinates and covariance entries
            against their Monte-Carlo standard errors: ~1 for exact samples, >> 1 when a
            sampler's bias exceeds what the sample size can resolve.
        max_abs_z: the largest |z| among those statistics.
    """

    weight_error: float
    mean_error: float
    cov_error: float
    chi2: float
    max_abs_z: float


def fit_statistics(mixture: GaussianMixture, x: torch.Tensor) -> MixtureFit:
    """Assign each sample to its most probable component under the clean mixture and compare
    the empirical weights, means and covariances with the true ones (with their standard
    errors: sqrt(w(1-w)/n) for weights, sqrt(S_ii/n_k) for means and
    sqrt((S_ii S_jj + S_ij^2)/(n_k - 1)) for covariance entries of Gaussian data)."""
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        return MixtureFit(*(float("inf"),) * 5)
    n = x.shape[0]
    labels = mixture.log_posterior(x, torch.ones(n, dtype=torch.float64)).argmax(1)
    z_scores, mean_errors, cov_errors = [], [], []
    counts = torch.bincount(labels, minlength=mixture.num_components).to(torch.float64)
    w_hat = counts / n
    w = mixture.weights
    z_scores.append((w_hat - w) / (w * (1 - w) / n).sqrt().clamp(min=1e-12))
    for k in range(mixture.num_components):
        cov = mixture.covariances[k]
        members = x[labels == k]
        nk = members.shape[0]
        if nk < 3:
            mean_errors.append(float("inf"))
            cov_errors.append(float("inf"))
            z_scores.append(torch.tensor([1e6], dtype=torch.float64))
            continue
        mean_hat = members.mean(0)
        cov_hat = torch.cov(members.T).reshape(mixture.dim, mixture.dim)
        diag = torch.diagonal(cov)
        mean_errors.append(float((mean_hat - mixture.means[k]).norm() / diag.mean().sqrt()))
        cov_errors.append(float((cov_hat - cov).norm() / cov.norm()))
        z_scores.append((mean_hat - mixture.means[k]) / (diag / nk).sqrt())
        cov_se = ((diag[:, None] * diag[None, :] + cov**2) / (nk - 1)).sqrt()
        upper = torch.triu_indices(mixture.dim, mixture.dim)
        z_scores.append(((cov_hat - cov) / cov_se)[upper[0], upper[1]])
    z = torch.cat(z_scores)
    return MixtureFit(
        weight_error=float(0.5 * (w_hat - w).abs().sum()),
        mean_error=max(mean_errors),
        cov_error=max(cov_errors),
        chi2=float((z**2).mean()),
        max_abs_z=float(z.abs().max()),
    )


DEFAULT_ORACLE_STEPS = (5, 10, 20, 50, 200)


def oracle_table(
    samplers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    *,
    dim: int = 2,
    num_samples: int = 4000,
    seed: int = 0,
    schedule: NoiseSchedule | None = None,
    progress: bool = False,
) -> list[dict]:
    """Run each sampler at each step count on the exact mixture denoiser.

    Returns rows ``{"sampler", "steps", "model_calls", **MixtureFit fields}``, preceded by a row
    for ``num_samples`` exact draws from the mixture (``sampler="exact"``): the Monte-Carlo
    noise floor of every statistic at this sample size.
    """
    from difflab.samplers import DISTILLED_SAMPLERS, SAMPLERS, get_sampler

    schedule = schedule or make_schedule("linear", 1000)
    mixture = example_mixture(dim)
    model = mixture.denoiser(schedule)
    names = list(samplers) if samplers else [n for n in SAMPLERS if n not in DISTILLED_SAMPLERS]
    for name in names:
        get_sampler(name)  # fail fast on unknown names
    exact, _ = mixture.sample(num_samples, torch.Generator().manual_seed(seed + 1))
    rows = [
        {"sampler": "exact", "steps": 0, "model_calls": 0, **vars(fit_statistics(mixture, exact))}
    ]
    for name in names:
        for n_steps in steps or DEFAULT_ORACLE_STEPS:
            calls = 0

            def counted(x, t):
                nonlocal calls
                calls += 1
                return model(x, t)

            generator = torch.Generator().manual_seed(seed)
            x_T = torch.randn(num_samples, mixture.dim, generator=generator, dtype=torch.float64)
            x0 = get_sampler(name)(counted, schedule, x_T, n_steps, generator, progress=progress)
            fit = fit_statistics(mixture, x0)
            rows.append({"sampler": name, "steps": n_steps, "model_calls": calls, **vars(fit)})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`oracle_table` as a markdown table."""
    lines = [
        "| sampler | steps | model calls | weight TV | mean err (sd) | cov rel err | chi2/dof | max abs z |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['model_calls']} | {r['weight_error']:.4f} | "
            f"{r['mean_error']:.4f} | {r['cov_error']:.4f} | {r['chi2']:.2f} | {r['max_abs_z']:.1f} |"
        )
    return "\n".join(lines)


def run_oracle_table(
    samplers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    *,
    dim: int = 2,
    num_samples: int = 4000,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Compute and print the oracle table (the ``difflab oracle`` command)."""
    rows = oracle_table(samplers, steps, dim=dim, num_samples=num_samples, seed=seed, progress=True)
    echo(f"Exact Gaussian-mixture denoiser, D={dim}, {num_samples} samples per cell, seed {seed}")
    echo(format_table(rows))
    return rows
