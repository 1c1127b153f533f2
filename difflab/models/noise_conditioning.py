"""Noise conditioning for the networks that judge noisy images x_t: the noise-aware classifier of
classifier guidance (Dhariwal & Nichol 2021, Sec. 4: a classifier trained on x_t) and the
noise-aware CLIP of CLIP guidance (GLIDE, Nichol et al. 2022, Sec. 2.4).

Both take each image's log signal-to-noise ratio ``lambda = log(alpha^2 / sigma^2)`` (Kingma et
al. 2021, Eq. 3) rather than an integer timestep, so no single noise schedule is baked in:
:class:`LogSNREmbedding` turns it into Fourier features and an MLP into a per-channel scale and
shift applied to a feature map (FiLM, Perez et al. 2018; :meth:`LogSNREmbedding.modulate`).
:func:`noise_images` draws their training input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Held-out figures of noise-aware models are reported at these log-SNRs (clean is log_snr_max).
EVAL_LOG_SNRS = (5.0, 0.0, -5.0)


def check_noise_range(noise_features: int, log_snr_min: float, log_snr_max: float) -> None:
    """Refuse an odd or tiny Fourier width and an empty log-SNR range (config checks)."""
    if noise_features < 2 or noise_features % 2:
        raise ValueError(f"noise_features must be even and >= 2, got {noise_features}")
    if not log_snr_min < log_snr_max:
        raise ValueError(f"need log_snr_min < log_snr_max, got {log_snr_min}, {log_snr_max}")


def log_snr_signal_noise(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, sigma)`` of a variance-preserving process at log-SNR ``lambda``:
    ``alpha^2 = sigmoid(lambda)``, ``sigma^2 = sigmoid(-lambda)`` (Kingma et al. 2021, Sec. 2)."""
    return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()


def noise_images(
    images: torch.Tensor,
    generator: torch.Generator,
    noisy_fraction: float,
    log_snr_min: float = -10.0,
    log_snr_max: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise-aware training input: each image is, with probability ``noisy_fraction``,
    replaced by ``x_t = alpha x_0 + sigma eps`` (DDPM's q(x_t|x_0), Ho et al. 2020, Eq. 4, written
    with the log-SNR) at a log-SNR drawn uniformly from ``[log_snr_min, log_snr_max]``, and kept
    clean (log-SNR ``log_snr_max``) otherwise. Returns ``(x_t, log_snr [B])``; every draw comes
    from ``generator`` (CPU), so a run is reproducible."""
    n = images.shape[0]
    noisy = torch.rand(n, generator=generator) < noisy_fraction
    drawn = log_snr_min + (log_snr_max - log_snr_min) * torch.rand(n, generator=generator)
    log_snr = torch.where(noisy, drawn, torch.full((n,), float(log_snr_max)))
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    alpha, sigma = (v.to(images).view(-1, 1, 1, 1) for v in log_snr_signal_noise(log_snr))
    noisy = noisy.view(-1, 1, 1, 1).to(images.device)
    return torch.where(noisy, alpha * images + sigma * eps, images), log_snr.to(images.device)


class LogSNREmbedding(nn.Module):
    """log-SNR -> Fourier features (sines and cosines of ``pi f_k u`` for ``u`` the log-SNR
    mapped to [-1, 1], frequencies ``f_k`` geometric from 1/2 to 16; cf. the sinusoidal timestep
    embedding of Ho et al. 2020 / Vaswani et al. 2017) -> MLP -> per-channel ``(scale, shift)``.
    The log-SNR is clamped to ``[low, high]``; ``high`` stands for a clean image."""

    def __init__(self, features: int, channels: int, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high
        half = features // 2
        frequencies = 0.5 * 32.0 ** (torch.arange(half) / max(half - 1, 1))
        self.register_buffer("frequencies", math.pi * frequencies, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(features, 4 * features), nn.SiLU(), nn.Linear(4 * features, 2 * channels)
        )

    def forward(self, log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (2 * log_snr.clamp(self.low, self.high) - self.low - self.high) / (self.high - self.low)
        angles = u[:, None] * self.frequencies.to(u)  # [B, features / 2]
        scale, shift = self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1)).chunk(2, dim=1)
        return scale[:, :, None, None], shift[:, :, None, None]  # [B, C, 1, 1] each

    def modulate(self, x: torch.Tensor, log_snr=None) -> torch.Tensor:
        """FiLM (Perez et al. 2018) of a feature map ``x`` [B, C, H, W] by each image's noise
        level: ``x (1 + scale) + shift``. ``log_snr`` is a number or ``[B]``; None = clean."""
        level = self.high if log_snr is None else log_snr
        level = torch.as_tensor(level, dtype=x.dtype, device=x.device).expand(x.shape[0])
        scale, shift = self(level)
        return x * (1 + scale) + shift
