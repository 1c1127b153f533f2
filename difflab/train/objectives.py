"""Training objectives: small callables ``objective(model, batch, generator) -> scalar loss``.

The Trainer knows nothing about what it trains; an objective turns a batch into a loss, drawing
all its randomness from the ``torch.Generator`` it is given (which the Trainer seeds per process
and saves with every checkpoint, so a resumed run draws the same noise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from difflab.diffusion import WEIGHTINGS, training_loss
from difflab.models.networks import call_denoiser, model_output  # noqa: F401 (re-exported)
from difflab.schedules import NoiseSchedule

Objective = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]


def diffusion_objective(
    schedule: NoiseSchedule,
    *,
    weighting: str = "uniform",
    gamma: float = 5.0,
    image_key: str = "image",
    cond_key: str | Sequence[str] | None = None,
) -> Objective:
    """The denoising loss of DDPM Algorithm 1 (Ho et al. 2020) as a Trainer objective.

    Wraps :func:`difflab.diffusion.training_loss` (eps / x0 / v targets from the schedule's
    ``prediction_type``; ``weighting`` "uniform" or "min_snr" with ``gamma``, Hang et al. 2023).

    Args:
        schedule: the noise schedule the model is trained for.
        weighting: per-timestep loss weighting, one of ``difflab.diffusion.WEIGHTINGS``.
        gamma: the min-SNR clip.
        image_key: where the clean images are when a batch is a dict.
        cond_key: batch key(s) passed to the model as keyword arguments of the same name, e.g.
            ``"encoder_hidden_states"`` (UNet2DConditionModel) or ``"class_labels"``.

    A batch is a tensor of clean images x0 [B, C, H, W] in [-1, 1], a tuple/list whose first
    item is that tensor (e.g. from ``TensorDataset``), or a dict holding it under ``image_key``.
    The model is called as ``model(x_t, t, **cond)`` and may return a tensor or a diffusers
    output with ``.sample``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"unknown loss weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}."
        )
    cond_keys = [cond_key] if isinstance(cond_key, str) else list(cond_key or [])

    def objective(model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        if isinstance(batch, dict):
            if image_key not in batch:
                raise KeyError(f"the batch has no {image_key!r} (keys: {', '.join(batch)}).")
            x0 = batch[image_key]
            cond = {k: batch[k] for k in cond_keys}
        else:
            if cond_keys:
                raise TypeError(
                    f"cond_key {cond_keys} needs dict batches, got {type(batch).__name__}."
                )
            x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
            cond = {}

        def denoiser(x_t: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return call_denoiser(model, x_t, t, **kwargs)

        return training_loss(
            denoiser, schedule, x0, generator=generator, weighting=weighting, gamma=gamma, **cond
        )

    return objective
