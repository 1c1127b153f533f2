"""The forward process q(x_t | x0) and the denoising training objective.

Implements DDPM Algorithm 1 (Ho et al. 2020): draw t uniformly, noise the data with
q(x_t | x0) = N(sqrt(alpha-bar_t) x0, (1 - alpha-bar_t) I) (Eq. 4), and regress the model's
prediction on its target (eps, x0 or v; Salimans & Ho 2022, Sec. 4) with an optional per-timestep
weighting: uniform (DDPM's "simple" loss, Eq. 14) or min-SNR-gamma (Hang et al. 2023, Eq. 9-10).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflab.schedules import NoiseSchedule, prediction_from_x0_and_eps

WEIGHTINGS = ("uniform", "min_snr")


def q_sample(
    x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, noise: torch.Tensor
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) as sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) noise (DDPM Eq. 4)."""
    alpha_bar = schedule.alpha_bar(t, like=x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def loss_weight(
    schedule: NoiseSchedule, t: torch.Tensor, weighting: str = "uniform", gamma: float = 5.0
) -> torch.Tensor:
    """Per-sample weights [B] of the regression loss for the schedule's prediction type.

    ``min_snr`` applies min(SNR, gamma) as the weight of the x0-space error and converts it to
    the chosen target: / SNR for eps, / (SNR + 1) for v (Hang et al. 2023, Eq. 9-10).
    """
    t = torch.as_tensor(t, dtype=torch.long)
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float64)
    if weighting != "min_snr":
        raise ValueError(
            f"unknown loss weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}."
        )
    if gamma <= 0:
        raise ValueError(f"min-SNR gamma must be positive, got {gamma}.")
    snr = schedule.snr[t.cpu()]
    clipped = snr.clamp(max=gamma)
    if schedule.prediction_type == "epsilon":
        return clipped / snr
    if schedule.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped  # "sample": the error is already in x0 space


def training_loss(
    model: Callable[..., torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    weighting: str = "uniform",
    gamma: float = 5.0,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    **model_kwargs,
) -> torch.Tensor:
    """The scalar denoising loss of DDPM Algorithm 1 for a batch of clean data ``x0``.

    Args:
        model: ``model(x_t, t, **model_kwargs) -> prediction`` of ``schedule.prediction_type``.
        schedule: the noise schedule (declares the prediction type).
        x0: clean data [B, ...].
        generator: the source of t and noise (when they are not given).
        weighting: ``"uniform"`` or ``"min_snr"`` (with ``gamma``).
        t, noise: fix the timesteps [B] or the noise (same shape as x0) instead of drawing them.
        model_kwargs: conditioning passed through to the model (e.g. text embeddings).

    Returns:
        mean over the batch of weight(t) * mean over dimensions of (prediction - target)^2.
    """
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values; check the data pipeline.")
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(
            0, schedule.num_train_timesteps, (batch,), generator=generator, device="cpu"
        ).to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(
            x0.device
        )
    x_t = q_sample(x0, t, schedule, noise)
    target = prediction_from_x0_and_eps(
        x0, noise, schedule.alpha_bar(t, like=x0), schedule.prediction_type
    )
    prediction = model(x_t, t, **model_kwargs)
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    weights = loss_weight(schedule, t, weighting, gamma).to(per_sample)
    return (weights * per_sample).mean()
