"""Noise schedules of discrete-time diffusion and conversions between prediction types.

A :class:`NoiseSchedule` holds the betas of DDPM (Ho et al. 2020, Eq. 2) and everything derived
from them: ``alphas_cumprod`` (alpha-bar_t, Eq. 4), the equivalent variance-exploding noise level
``sigmas`` (sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t), Karras et al. 2022, Table 1) and the
log signal-to-noise ratio (Kingma et al. 2021, Eq. 3). Timesteps are 0-indexed as in diffusers:
``t = 0`` is the least noisy step and ``t = T - 1`` the noisiest.

The schedule also declares, once, what the denoiser predicts (``"epsilon"``, ``"sample"`` or
``"v_prediction"`` — diffusers' names), so samplers, losses and guidance wrappers all agree on
how to read a model output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SCHEDULE_NAMES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace", "karras")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving noise schedule.

    Attributes:
        betas: float64 tensor [T] of per-step noise variances beta_t (DDPM Eq. 2).
        prediction_type: what the denoiser outputs: ``"epsilon"``, ``"sample"`` (x0) or
            ``"v_prediction"`` (v = alpha_t * eps - sigma_t * x0, Salimans & Ho 2022, Sec. 4).
        name: the schedule's name, kept for saving and printing.
    """

    betas: torch.Tensor
    prediction_type: str = "epsilon"
    name: str = "custom"
    alphas_cumprod: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError("betas must be a 1-D sequence of at least 2 values.")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("every beta must be a finite number in (0, 1).")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {self.prediction_type!r}; "
                f"use one of {', '.join(PREDICTION_TYPES)}."
            )
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of discrete timesteps the model was trained on."""
        return self.betas.numel()

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t): the VE noise level of step t."""
        return ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    @property
    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha-bar_t / (1 - alpha-bar_t)) (Kingma et al. 2021, Eq. 3)."""
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    @property
    def snr(self) -> torch.Tensor:
        """SNR(t) = alpha-bar_t / (1 - alpha-bar_t)."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """alpha-bar at integer timesteps ``t`` (any shape); ``t = -1`` means "no noise" (1.0).

        With ``like`` given, the result has its dtype/device and is shaped to broadcast against
        it (one value per batch element).
        """
        t = torch.as_tensor(t, dtype=torch.long)
        padded = torch.cat([self.alphas_cumprod, torch.ones(1, dtype=torch.float64)])
        values = padded[t.cpu()]  # index -1 reads the trailing 1.0
        if like is None:
            return values
        return _broadcast(values, like)

    def to_config(self) -> dict:
        """A JSON-serialisable description (the betas themselves for custom schedules)."""
        return {
            "name": self.name,
            "num_train_timesteps": self.num_train_timesteps,
            "prediction_type": self.prediction_type,
            "betas": self.betas.tolist(),
        }

    def to_diffusers_config(self) -> dict:
        """Keyword arguments that make a diffusers scheduler use exactly this schedule."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "trained_betas": self.betas.tolist(),
            "prediction_type": self.prediction_type,
        }


def make_schedule(
    name: str = "linear",
    num_train_timesteps: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    prediction_type: str = "epsilon",
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
) -> NoiseSchedule:
    """Build a named schedule.

    - ``linear``: betas linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4).
    - ``scaled_linear``: sqrt(beta) linear, Stable Diffusion's schedule (Rombach et al. 2022);
      pass beta_start=0.00085, beta_end=0.012 for SD's exact values.
    - ``cosine``: alpha-bar_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2), betas
      clipped at ``max_beta`` (Nichol & Dhariwal 2021, Eq. 17).

    The betas match diffusers' ``beta_schedule`` of the same name (``cosine`` is its
    ``squaredcos_cap_v2``), so a model trained here runs under diffusers' schedulers.
    """
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}.")
    n = num_train_timesteps
    if name == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif name == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    elif name == "cosine":

        def f(u: float) -> float:
            return math.cos((u + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)], dtype=torch.float32
        )
    else:
        raise ValueError(
            f"unknown noise schedule {name!r}; use one of {', '.join(SCHEDULE_NAMES)}."
        )
    # float32 betas (as diffusers builds them) so both libraries see identical alphas_cumprod.
    return NoiseSchedule(betas.double(), prediction_type=prediction_type, name=name)


def shifted_schedule(schedule: NoiseSchedule, shift: float) -> NoiseSchedule:
    """``schedule`` with its log-SNR shifted by -2 log(``shift``): alpha-bar_t =
    sigmoid(log-SNR_t - 2 log shift), a noisier schedule for ``shift`` > 1 (Hoogeboom et al.
    2023, simple diffusion, Sec. 3.1, where the shift is the ratio of a resolution to a base
    resolution), which moves training towards the noise levels where the layout is decided.
    Betas are capped at 0.999 as the cosine schedule's are; ``shift = 1`` returns ``schedule``."""
    if shift <= 0:
        raise ValueError(f"the schedule shift must be positive (1 = no shift), got {shift}.")
    if shift == 1.0:
        return schedule
    alpha_bar = torch.sigmoid(schedule.log_snr - 2 * math.log(shift))
    previous = torch.cat([torch.ones(1, dtype=alpha_bar.dtype), alpha_bar[:-1]])
    betas = (1 - alpha_bar / previous).clamp(1e-8, 0.999)
    return NoiseSchedule(betas, schedule.prediction_type, name=f"{schedule.name}-shift{shift:g}")


EPSILON_MIN_TERMINAL_ALPHA_BAR = 1e-6
"""The smallest alpha-bar_T on which :func:`check_epsilon_prediction` lets an unclipped model
predict epsilon: x0 is then recovered with at most 1000x its epsilon error (the scaled-linear
schedule: 37x; linear: 157x; cosine: 20,000x)."""


def check_epsilon_prediction(schedule: NoiseSchedule, clip_sample: bool) -> None:
    """Refuse epsilon prediction on a schedule that ends at (nearly) zero SNR when x0 is not
    clipped. Samplers recover x0 = (x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T), so at the first
    step an epsilon error is multiplied by 1 / sqrt(abar_T) (20,000x on the cosine schedule, 81,000x
    shifted 4x) and, with latents never clipped, the image is lost; as abar_T -> 0 predicting
    epsilon also stops saying anything about the data (Lin et al. 2024, Common Diffusion Noise
    Schedules and Sample Steps are Flawed, Sec. 3.2, who switch to v-prediction for this)."""
    if schedule.prediction_type != "epsilon" or clip_sample:
        return
    abar_end = float(schedule.alphas_cumprod[-1])
    if abar_end < EPSILON_MIN_TERMINAL_ALPHA_BAR:
        raise ValueError(
            f"epsilon prediction on the {schedule.name} schedule, whose last alpha-bar is "
            f"{abar_end:.2g}, cannot be sampled: x0 would carry {abar_end**-0.5:,.0f} times the "
            'epsilon error at the first step. Set prediction_type = "v_prediction" (or a '
            'schedule such as "scaled_linear" without a large schedule_shift).'
        )


def karras_sigmas(
    sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0
) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) -
    s_max^(1/rho)))^rho, for i = 0..N-1 (decreasing, float64)."""
    if num_steps < 1:
        raise ValueError("num_steps must be at least 1.")
    if num_steps == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def timesteps(
    schedule: NoiseSchedule, num_steps: int, spacing: str = "leading", offset: int = 0
) -> torch.Tensor:
    """The decreasing integer timesteps a sampler visits with ``num_steps`` model calls.

    Spacings (Lin et al. 2024, Table 2, as diffusers implements them):

    - ``leading``: t = i * (T // N) + offset, i = N-1..0 (DDIM's original spacing; ends at
      t = offset). ``offset`` is diffusers' ``steps_offset`` (Stable Diffusion uses 1).
    - ``trailing``: t = round(T - i * T / N) - 1, i = 0..N-1 (starts at T-1, the pure-noise end).
    - ``linspace``: N points rounded from linspace(0, T-1, N), reversed.
    - ``karras``: the Karras sigma ramp (rho = 7) between the schedule's smallest and largest
      sigma, each sigma snapped to the integer timestep with the nearest log-sigma, so the model
      is only ever called at timesteps it was trained on. Where the ramp is denser than the
      integer grid (many steps near sigma_min) colliding timesteps are pushed apart by one.

    Returns a long tensor [N] in strictly decreasing order.
    """
    T = schedule.num_train_timesteps
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if num_steps > T:
        raise ValueError(
            f"num_steps={num_steps} exceeds the schedule's {T} training timesteps; "
            f"use at most {T} steps."
        )
    if offset and spacing != "leading":
        raise ValueError("a timestep offset applies only to 'leading' spacing.")
    if spacing == "leading":
        if not 0 <= offset < T // num_steps:
            raise ValueError(f"offset must lie in [0, {T // num_steps}) for {num_steps} steps.")
        ts = np.arange(0, num_steps)[::-1] * (T // num_steps) + offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, num_steps).round()[::-1]
    elif spacing == "karras":
        log_sigmas = schedule.sigmas.log()
        target = karras_sigmas(
            float(schedule.sigmas[0]), float(schedule.sigmas[-1]), num_steps
        ).log()
        ts = (target[:, None] - log_sigmas[None, :]).abs().argmin(dim=1).numpy()
        ts = _strictly_decreasing(ts, T)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use one of {', '.join(SPACINGS)}.")
    ts = torch.as_tensor(np.array(ts, dtype=np.int64), dtype=torch.long)
    if (ts[:-1] <= ts[1:]).any():
        raise ValueError(
            f"{num_steps} steps with {spacing!r} spacing repeat a timestep of this "
            f"{T}-step schedule; use fewer steps or another spacing."
        )
    return ts


def _strictly_decreasing(ts: np.ndarray, T: int) -> np.ndarray:
    """Nudge a non-increasing integer sequence in [0, T-1] to a strictly decreasing one."""
    ts = ts.astype(np.int64).copy()
    for i in range(len(ts) - 2, -1, -1):  # from the low-noise end upwards
        ts[i] = max(ts[i], ts[i + 1] + 1)
    ts[0] = min(ts[0], T - 1)
    for i in range(1, len(ts)):  # and back down from the top if that overflowed T-1
        ts[i] = min(ts[i], ts[i - 1] - 1)
    return ts


# ---- conversions between prediction types (Salimans & Ho 2022, Sec. 4 and Appendix D) ----
# With x_t = a * x0 + s * eps, a = sqrt(alpha-bar_t), s = sqrt(1 - alpha-bar_t), v = a*eps - s*x0:
#   x0  = (x_t - s * eps) / a          eps = (x_t - a * x0) / s
#   x0  = a * x_t - s * v              eps = s * x_t + a * v


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values [B] (or a scalar) to broadcast against ``like`` [B, ...]."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def predicted_x0_and_eps(
    prediction: torch.Tensor,
    x_t: torch.Tensor,
    alpha_bar: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both the implied clean sample x0 and noise eps from any prediction type.

    ``alpha_bar`` must broadcast against ``x_t`` (see :meth:`NoiseSchedule.alpha_bar`).
    """
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        eps = prediction
        x0 = (x_t - s * eps) / a
    elif prediction_type == "sample":
        x0 = prediction
        eps = (x_t - a * x0) / s
    elif prediction_type == "v_prediction":
        x0 = a * x_t - s * prediction
        eps = s * x_t + a * prediction
    else:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}."
        )
    return x0, eps


def prediction_from_x0_and_eps(
    x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The model output of type ``prediction_type`` that corresponds to (x0, eps)."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    raise ValueError(
        f"unknown prediction_type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}."
    )


# ---- consistency models (Song et al. 2023; Luo et al. 2023) ----


def solver_timesteps(schedule: NoiseSchedule, num_intervals: int) -> torch.Tensor:
    """The increasing timestep grid that consistency distillation and consistency training step
    along: t_min = 0, then the N-step trailing grid (:func:`timesteps`) from its least noisy
    entry up to T - 1. When N divides T this is 0, k - 1, 2k - 1, ..., T - 1 with the skip
    k = T / N ("skipping-step", Luo et al. 2023, Sec. 4.3; the DDIM solver grid of the LCM code).
    Neighbours are one solver step apart; the boundary condition f(x, t_min) = x holds at 0."""
    T = schedule.num_train_timesteps
    if not isinstance(num_intervals, int) or not 1 <= num_intervals <= T // 2:
        raise ValueError(
            f"the solver grid needs between 1 and {T // 2} intervals (skip >= 2) on this "
            f"{T}-step schedule, got {num_intervals!r}."
        )
    upper = timesteps(schedule, num_intervals, "trailing").flip(0)
    return torch.cat([torch.zeros(1, dtype=torch.long), upper])


def lcm_timesteps(
    schedule: NoiseSchedule, num_steps: int, original_steps: int = 50
) -> torch.Tensor:
    """The decreasing timesteps of multistep latent-consistency sampling (Luo et al. 2023,
    Alg. 3): ``num_steps`` entries evenly spaced by index along the solver grid the model was
    distilled on (``original_steps`` intervals, :func:`solver_timesteps` without t_min),
    starting at its noisiest entry - the timesteps diffusers' LCMScheduler visits whenever
    ``original_steps`` divides T (its grid is k - 1, ..., original_steps * k - 1, k = T //
    original_steps)."""
    if not isinstance(num_steps, int) or not 1 <= num_steps <= original_steps:
        raise ValueError(
            f"consistency sampling takes 1 to {original_steps} steps (the solver grid the model "
            f"was distilled on has {original_steps} intervals), got {num_steps!r}."
        )
    grid = solver_timesteps(schedule, original_steps)[1:].flip(0)
    picks = np.floor(np.linspace(0, original_steps, num_steps, endpoint=False)).astype(np.int64)
    return grid[torch.as_tensor(picks)]


def consistency_scalings(
    t: torch.Tensor | int, timestep_scaling: float = 10.0, sigma_data: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boundary-condition scalings of a consistency model on integer timesteps (Song et al.
    2023, Eq. 7 with c_skip and c_out of Appendix C, in the discrete form of Luo et al. 2023,
    Eq. 8): with s = t * timestep_scaling, c_skip = sigma_data^2 / (s^2 + sigma_data^2) and
    c_out = s / sqrt(s^2 + sigma_data^2), so c_skip(0) = 1 and c_out(0) = 0 exactly: f(x, 0) = x.
    Returns float64 tensors shaped like ``t``."""
    s = torch.as_tensor(t, dtype=torch.float64) * timestep_scaling
    return sigma_data**2 / (s**2 + sigma_data**2), s / (s**2 + sigma_data**2).sqrt()


def consistency_function(
    x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | int, timestep_scaling: float = 10.0
) -> torch.Tensor:
    """f(x_t, t) = c_skip(t) x_t + c_out(t) x0, where ``x0`` is the network's clean-sample
    estimate (Song et al. 2023, Eq. 7; Luo et al. 2023, Eq. 8); ``t`` an int or one timestep per
    sample [B]."""
    c_skip, c_out = consistency_scalings(t, timestep_scaling)
    return _broadcast(c_skip, x_t) * x_t + _broadcast(c_out, x_t) * x0
