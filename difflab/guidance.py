"""Guidance as wrappers around a denoiser: each function takes a model callable and returns a
new ``model(x_t, t) -> prediction`` that any sampler in :mod:`difflab.samplers` can drive.

- :func:`classifier_free_guidance` (Ho & Salimans 2022, Eq. 6), one batched call for both
  branches, with optional guidance rescale (Lin et al. 2024, Eq. 15-16);
- :func:`gradient_guidance` — classifier guidance (Dhariwal & Nichol 2021, Sec. 4.2, Eq. 14)
  and any other differentiable score of x_t (CLIP guidance), plus :func:`log_prob_gradient`;
- :func:`thresholded` with :func:`static_threshold` and :func:`dynamic_threshold`
  (Saharia et al. 2022, Sec. 2.3): clip the implied x0 and re-derive the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from difflab.schedules import NoiseSchedule, predicted_x0_and_eps, prediction_from_x0_and_eps

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _concat(uncond: Any, cond: Any) -> Any:
    """Stack unconditional and conditional inputs along the batch (tensors or dicts of them)."""
    if isinstance(cond, dict):
        if not isinstance(uncond, dict) or set(uncond) != set(cond):
            raise ValueError("cond and uncond must be dicts with the same keys.")
        return {key: _concat(uncond[key], cond[key]) for key in cond}
    if cond is None:
        return None
    return torch.cat([uncond, cond])


def classifier_free_guidance(
    model: Callable[..., torch.Tensor],
    cond: Any,
    uncond: Any,
    scale: float | torch.Tensor,
    *,
    rescale: float = 0.0,
) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6):
    pred = pred(x, uncond) + w (pred(x, cond) - pred(x, uncond)).

    Both branches run in one batched call ``model(cat[x, x], cat[t, t], cat[uncond, cond])``;
    ``cond``/``uncond`` are tensors or dicts of tensors with the batch first (a dict is passed to
    the model as keyword arguments). ``scale = 1`` is the plain conditional model, ``0`` the
    unconditional one; a tensor broadcasting against x (e.g. [B, 1, 1, 1]) gives each sample its
    own weight (guidance distillation draws one per sample). ``rescale`` = phi of Lin et al.
    2024 (Eq. 15-16): the guided prediction is rescaled to the per-sample standard deviation of
    the conditional one and mixed back with weight phi, which counters over-exposure at high
    ``scale``. As in diffusers, it acts on the model's own prediction (the paper states it for
    v-prediction).
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must lie in [0, 1], got {rescale}.")
    both = _concat(uncond, cond)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x2, t2 = torch.cat([x, x]), torch.cat([t, t])
        out = model(x2, t2, **both) if isinstance(both, dict) else model(x2, t2, both)
        pred_uncond, pred_cond = out.chunk(2)
        pred = pred_uncond + scale * (pred_cond - pred_uncond)
        if rescale > 0:
            dims = list(range(1, x.ndim))
            ratio = pred_cond.std(dim=dims, keepdim=True) / pred.std(dim=dims, keepdim=True)
            pred = rescale * pred * ratio + (1 - rescale) * pred
        return pred

    return guided


def log_prob_gradient(
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Turn ``log_prob(x_t, t) -> [B]`` (e.g. a noise-aware classifier's log p(c | x_t)) into
    its gradient with respect to x_t, computed by autograd."""

    def gradient(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob(x_in, t).sum(), x_in)
        return grad

    return gradient


def gradient_guidance(
    model: Model,
    schedule: NoiseSchedule,
    gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scale: float = 1.0,
) -> Model:
    """Classifier guidance (Dhariwal & Nichol 2021, Eq. 14):
    eps-hat = eps - s sqrt(1 - abar_t) grad_x log p(c | x_t).

    ``gradient(x_t, t)`` returns grad_x log p(c | x_t) (see :func:`log_prob_gradient`). With
    ``s = 1`` and the exact gradient, the guided model is the exact conditional denoiser of
    p(x | c); ``s > 1`` sharpens toward the class. Works for every prediction type (the
    prediction is converted to eps and back).
    """

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prediction = model(x, t)
        alpha_bar = schedule.alpha_bar(t, like=x)
        x0, eps = predicted_x0_and_eps(prediction, x, alpha_bar, schedule.prediction_type)
        eps = eps - scale * (1 - alpha_bar).sqrt() * gradient(x, t).to(eps)
        x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        return prediction_from_x0_and_eps(x0, eps, alpha_bar, schedule.prediction_type)

    return guided


def static_threshold(x0: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Static thresholding: clip the x0 estimate to [-limit, limit] (Saharia et al. 2022, Sec. 2.3)."""
    return x0.clamp(-limit, limit)


def dynamic_threshold(
    x0: torch.Tensor, percentile: float = 0.995, max_value: float = float("inf")
) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = the ``percentile``
    quantile of |x0|, floored at 1 and optionally capped at ``max_value`` (diffusers'
    ``sample_max_value``); x0 is clipped to [-s, s] and divided by s, so samples that would
    saturate are pulled back inside [-1, 1] instead of being clipped flat."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile}.")
    flat = x0.flatten(1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0, max=max(max_value, 1.0))
    s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


def thresholded(
    model: Model,
    schedule: NoiseSchedule,
    threshold: Callable[[torch.Tensor], torch.Tensor] = dynamic_threshold,
) -> Model:
    """Wrap ``model`` so its implied x0 is passed through ``threshold`` at every call, and the
    prediction (and so the implied eps) is re-derived from the thresholded x0 and x_t."""

    def clipped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = schedule.alpha_bar(t, like=x)
        x0, _ = predicted_x0_and_eps(model(x, t), x, alpha_bar, schedule.prediction_type)
        x0 = threshold(x0)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return prediction_from_x0_and_eps(x0, eps, alpha_bar, schedule.prediction_type)

    return clipped
