"""Tiny models and data for the Trainer tests (imported by tests/test_train_*.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from difflab.train import TrainConfig


class TinyDenoiser(nn.Module):
    """A two-layer conv net on 8x8 images with the timestep as an extra channel, and dropout
    (so training also draws from the global torch RNG, which resume must restore)."""

    def __init__(self, channels: int = 3, width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = nn.functional.silu(self.conv1(torch.cat([x, tt], dim=1)))
        return self.conv2(self.drop(h))


def tiny_images(n: int = 36, seed: int = 0) -> TensorDataset:
    """``n`` random 3x8x8 images in [-1, 1] (smooth, so there is structure to learn)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 2, 2, generator=g) * 2 - 1
    return TensorDataset(nn.functional.interpolate(low, size=(8, 8), mode="bilinear"))


def tiny_model(seed: int = 0) -> TinyDenoiser:
    torch.manual_seed(seed)
    return TinyDenoiser()


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        max_steps=12,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=3,
        lr_schedule="cosine",
        ema_decay=0.8,
        checkpoint_every=4,
        keep_checkpoints=3,
        sample_every=0,
        log_every=2,
        seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning
    OpenMP threads slow them down many times over; run each Trainer test on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
