"""What every few-step distillation shares: calling a student or a (guided) teacher at
per-sample guidance weights, the Trainer objective that draws a batch's randomness, and the
regression distances.

A distillation is an ``nn.Module`` whose ``forward(x0, context, u, noise, scale)`` returns the
loss (so the Trainer's DDP wrapper sees the whole computation, and a frozen teacher or an EMA
target network inside it is checkpointed with the student); :func:`distillation_objective`
turns a batch of cached latents and caption states into those arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from difflab.guidance import classifier_free_guidance
from difflab.models.networks import call_denoiser, guidance_condition, guidance_input_dim
from difflab.train.objectives import Objective

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def conditional_denoiser(net: nn.Module, context: torch.Tensor, scale: torch.Tensor) -> Model:
    """``model(x_t, t)`` of ``net`` conditioned on the text states ``context`` [B, L, D], with
    the guidance weights ``scale`` [B] as an input when ``net`` takes them (a guidance-
    conditioned U-Net, see :func:`~difflab.models.networks.guidance_embedding`)."""
    condition = guidance_condition(net, scale, context.shape[0])

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return call_denoiser(net, x, t, encoder_hidden_states=context, **condition)

    return model


def guided_denoiser(
    net: nn.Module, context: torch.Tensor, empty: torch.Tensor, scale: torch.Tensor
) -> Model:
    """``model(x_t, t)`` of a teacher guided with per-sample weights ``scale`` [B]: classifier-free
    guidance (Ho & Salimans 2022, Eq. 6; ``empty`` [1, L, D] is the empty prompt's states) around
    a plain denoiser, the weight as an input for one that takes it (a guidance-distilled
    teacher, Meng et al. 2023)."""
    if guidance_input_dim(net) is not None:
        return conditional_denoiser(net, context, scale)

    def plain(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return call_denoiser(net, x, t, encoder_hidden_states=states)

    weight = scale.to(context.dtype).reshape(-1, 1, 1, 1)
    return classifier_free_guidance(plain, context, empty.to(context).expand_as(context), weight)


def distillation_objective(guidance_range: tuple[float, float] = (1.0, 1.0)) -> Objective:
    """The Trainer objective of every distillation here: from a batch of cached latents
    (``image``) and caption states (``encoder_hidden_states``) it draws, from the Trainer's
    generator, a uniform ``u`` [B] (where on the time grid each example lands), the noise and a
    guidance weight per example, uniform in ``guidance_range`` (Meng et al. 2023 and Luo et al.
    2023 sample w the same way), and calls ``model(x0, context, u, noise, scale)``."""
    low, high = guidance_range
    if not 0.0 <= low <= high:
        raise ValueError(
            f"the guidance range must satisfy 0 <= low <= high, got [{low}, {high}]; "
            "1 is no guidance."
        )

    def objective(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x0, context = batch["image"], batch["encoder_hidden_states"]
        count, device = x0.shape[0], x0.device
        u = torch.rand(count, generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
        scale = (low + (high - low) * torch.rand(count, generator=generator)).to(device)
        return model(x0, context, u, noise, scale)

    return objective


def index_on_grid(u: torch.Tensor, count: int) -> torch.Tensor:
    """Map uniform draws u in [0, 1) to integers 0..count-1 (long, same device)."""
    return (u * count).long().clamp(0, count - 1)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Mean pseudo-Huber distance sqrt(|a - b|^2 + c^2) - c per element (Song & Dhariwal 2023,
    Sec. 3.3; the LCM code's "huber" loss)."""
    return ((a.float() - b.float()).pow(2) + c**2).sqrt().sub(c).mean()


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no gradients (a teacher or a target network)."""
    return module.eval().requires_grad_(False)
