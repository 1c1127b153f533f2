"""Sample grids during training: a ready-made ``sample_fn`` for diffusion models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.models.networks import call_denoiser
from difflab.samplers import sample
from difflab.schedules import NoiseSchedule
from difflab.train.records import save_image_grid

SAMPLES_DIR = "samples"


def diffusion_sample_fn(
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int = 20,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    nrow: int | None = None,
) -> Callable[[nn.Module, int, Path], Path]:
    """A ``sample_fn(model, step, out_dir)`` that saves ``samples/step_XXXXXXXX.png``.

    The same starting noise (drawn on the CPU from ``seed``) is used at every call, so the grids
    of one run show the same samples improving. ``model_kwargs`` (e.g. class labels or text
    embeddings, batch size ``shape[0]``) are passed to every model call. Each PNG carries the
    step, sampler, steps and seed in its text chunks.
    """
    shape = tuple(shape)

    def sample_fn(model: nn.Module, step: int, out_dir: Path) -> Path:
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g).to(device)
        kwargs = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in (model_kwargs or {}).items()
        }

        def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return call_denoiser(model, x_t, t, **kwargs)

        images = sample(sampler, denoiser, schedule, x, steps, g)
        return save_image_grid(
            images,
            Path(out_dir) / SAMPLES_DIR / f"step_{step:08d}.png",
            nrow=nrow,
            metadata={"step": step, "sampler": sampler, "steps": steps, "seed": seed},
        )

    return sample_fn
