"""Samplers: plain functions that turn noise into data with any denoiser callable.

Every sampler shares one signature (after k-diffusion's design)::

    sampler(model, schedule, x, steps, generator=None, *, spacing=..., callback=None,
            progress=False, **options) -> tensor

- ``model(x_t, t) -> prediction``: ``t`` a long tensor [B] of integer timesteps; the prediction
  is of ``schedule.prediction_type`` (declared once, on the schedule). Conditioning and guidance
  are closures/wrappers around the model (see :mod:`difflab.guidance`), never sampler options.
- ``x``: the starting tensor, unit-variance noise x_T ~ N(0, I) in the variance-preserving
  convention (for :func:`ddim_invert`: the clean data x0).
- ``steps``: the number of model calls (Heun: steps along the timestep grid, ~2x calls).
- ``spacing``: which trained timesteps to visit: a name (see
  :func:`difflab.schedules.timesteps`) or an explicit decreasing sequence of ``steps`` integers.
- ``generator``: the source of all fresh noise (stochastic samplers draw in a fixed order, so
  the same seed gives the same result).
- ``callback(SamplerStep)``: called after every step, for editing, progress or movies.

Timesteps are the integer timesteps of :func:`difflab.schedules.timesteps`, so samplers that
work in the sigma (VE) parameterisation still only query the model at trained timesteps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from difflab.schedules import (
    NoiseSchedule,
    consistency_function,
    lcm_timesteps,
    predicted_x0_and_eps,
    timesteps,
)

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SamplerStep:
    """What a callback sees after each step.

    Attributes:
        index: the step number, 0-based.
        timestep: the integer timestep the model was called at.
        x: the state after the step, in the VP convention (unit-variance scale).
        denoised: the model's estimate of x0 at this step.
    """

    index: int
    timestep: int
    x: torch.Tensor
    denoised: torch.Tensor


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(
            f"{what} contains NaN or infinite values; check the input tensor, the model's "
            "weights and its dtype (fp16 overflow is a common cause)."
        )


def denoise(
    model: Model, schedule: NoiseSchedule, x: torch.Tensor, t: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call ``model`` at integer timestep ``t`` (one for the batch, or a long tensor [B] of one
    per sample) and return its (x0, eps) estimates."""
    if torch.is_tensor(t) and t.ndim == 1:
        t_batch, where = t.to(device=x.device, dtype=torch.long), "s (one per sample)"
    else:
        t_batch, where = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device), t
    prediction = model(x, t_batch)
    if prediction.shape != x.shape:
        raise ValueError(
            f"the model returned shape {tuple(prediction.shape)} for input {tuple(x.shape)}; "
            "a denoiser must return a prediction shaped like its input."
        )
    _check_finite(prediction, f"the model output at timestep {where}")
    return predicted_x0_and_eps(
        prediction, x, schedule.alpha_bar(t_batch, like=x), schedule.prediction_type
    )


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)


def resolve_timesteps(
    schedule: NoiseSchedule, steps: int, spacing: str | Sequence[int] | torch.Tensor
) -> list[int]:
    """The timesteps to visit: a named spacing of :func:`difflab.schedules.timesteps`, or an
    explicit strictly decreasing sequence of ``steps`` trained timesteps (custom schedules,
    or another library's exact choice such as Stable Diffusion's ``steps_offset = 1``)."""
    if isinstance(spacing, str):
        return timesteps(schedule, steps, spacing).tolist()
    ts = [int(t) for t in (spacing.tolist() if torch.is_tensor(spacing) else spacing)]
    T = schedule.num_train_timesteps
    if len(ts) != steps:
        raise ValueError(f"got {len(ts)} explicit timesteps for steps={steps}; they must agree.")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)) or not all(0 <= t < T for t in ts):
        raise ValueError(
            f"explicit timesteps must be strictly decreasing integers in [0, {T - 1}]; got {ts}."
        )
    return ts


def _plan(
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    spacing: str | Sequence[int],
    progress: bool,
    name: str,
) -> tuple[list[int], list[int], Callable]:
    """Validate the inputs; return the timesteps, their successors (-1 = clean) and an iterator."""
    _check_finite(x, "the starting tensor")
    ts = resolve_timesteps(schedule, steps, spacing)
    prevs = ts[1:] + [-1]

    def iterate(seq):
        return tqdm(seq, desc=name, disable=not progress, leave=False)

    return ts, prevs, iterate


def _alpha_bar(schedule: NoiseSchedule, t: int) -> float:
    return float(schedule.alpha_bar(torch.tensor(t)))


def ddpm(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "leading",
    variance: str = "beta_tilde",
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling, DDPM Algorithm 2 (Ho et al. 2020), on any timestep subsequence.

    Each step draws x_{t'} ~ p(x_{t'} | x_t) = N(mu, s^2 I) with the posterior mean of Eq. 7,
    mu = sqrt(abar_t') b / (1 - abar_t) x0 + sqrt(1 - b)(1 - abar_t') / (1 - abar_t) x_t,
    where b = 1 - abar_t / abar_t' is the effective beta between consecutive visited timesteps
    (b = beta_t when all T steps are used, and then mu is exactly Algorithm 2's
    1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)). ``variance`` picks s^2 = b
    (``"beta"``, the paper's sigma_t^2 = beta_t) or the posterior variance
    beta-tilde = (1 - abar_t') / (1 - abar_t) b (``"beta_tilde"``, Eq. 7). No noise is added
    on the final step.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"unknown DDPM variance {variance!r}; use 'beta' or 'beta_tilde'.")
    ts, prevs, iterate = _plan(schedule, x, steps, spacing, progress, "ddpm")
    for i, (t, t_prev) in enumerate(iterate(list(zip(ts, prevs, strict=True)))):
        x0, _ = denoise(model, schedule, x, t)
        abar, abar_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
        beta = 1 - abar / abar_prev
        mean = (abar_prev**0.5 * beta / (1 - abar)) * x0 + (
            (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)
        ) * x
        if t_prev >= 0:
            var = beta if variance == "beta" else max((1 - abar_prev) / (1 - abar) * beta, 1e-20)
            x = mean + var**0.5 * _noise_like(x, generator)
        else:
            x = mean
        if callback is not None:
            callback(SamplerStep(i, t, x, x0))
    return x


def ddim(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "leading",
    eta: float = 0.0,
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12).

    x_{t'} = sqrt(abar_t') x0 + sqrt(1 - abar_t' - s^2) eps + s z, with
    s = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t') (Eq. 16). ``eta = 0``
    is the deterministic implicit sampler; ``eta = 1`` is DDPM with the posterior variance.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}.")
    ts, prevs, iterate = _plan(schedule, x, steps, spacing, progress, "ddim")
    for i, (t, t_prev) in enumerate(iterate(list(zip(ts, prevs, strict=True)))):
        x0, eps = denoise(model, schedule, x, t)
        abar, abar_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
        std = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
        x = abar_prev**0.5 * x0 + max(1 - abar_prev - std**2, 0.0) ** 0.5 * eps
        if std > 0:
            x = x + std * _noise_like(x, generator)
        if callback is not None:
            callback(SamplerStep(i, t, x, x0))
    return x


def ddim_step(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
) -> torch.Tensor:
    """One deterministic DDIM step (Song et al. 2021, Eq. 12 with eta = 0) from per-sample
    timesteps ``t`` [B] to ``t_next`` [B] (-1 = clean): x_t' = sqrt(abar_t') x0 + sqrt(1 - abar_t')
    eps, with (x0, eps) the model's estimates at (x_t, t). The ODE solver that progressive and
    consistency distillation query their teachers with (Salimans & Ho 2022, Alg. 2; Luo et al.
    2023, Eq. 9); :func:`ddim` takes the same step along a sampling schedule."""
    from difflab.diffusion import q_sample  # the same affine map as the forward process

    x0, eps = denoise(model, schedule, x, t)
    return q_sample(x0, t_next, schedule, eps)


def ddim_invert(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "leading",
    refine: int = 0,
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM inversion x0 -> x_T (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol
    2021, Appendix F): run the eta = 0 update of Eq. 12 backwards over the same timesteps
    :func:`ddim` visits, so ``ddim(model, s, ddim_invert(model, s, x0, n), n)`` ~= x0.

    Moving from level t' to t, the noise is estimated as eps(x_t', t), the model call the
    sampler makes at t (the standard approximation; its error is first order in the step).
    ``refine = k`` adds k fixed-point iterations per step that re-evaluate eps at the current
    estimate of x_t, converging to the x_t from which the DDIM step lands exactly on x_t'
    (fixed-point inversion, Pan et al. 2023, "Effective Real Image Editing with Accelerated
    Iterative Diffusion Inversion"); each iteration costs one more model call per step.
    ``generator`` is unused (the map is deterministic) and kept for the shared signature.
    """
    if refine < 0:
        raise ValueError(f"refine must be a non-negative number of iterations, got {refine}.")
    ts, _, iterate = _plan(schedule, x, steps, spacing, progress, "ddim_invert")
    current = -1  # x starts clean
    for i, t in enumerate(iterate(ts[::-1])):
        abar_cur, abar = _alpha_bar(schedule, current), _alpha_bar(schedule, t)
        estimate = x  # where eps is evaluated: first x_t' itself, then the refined x_t
        for _ in range(1 + refine):
            _, eps = denoise(model, schedule, estimate, t)
            x0 = (x - (1 - abar_cur) ** 0.5 * eps) / abar_cur**0.5
            estimate = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
        x = estimate
        current = t
        if callback is not None:
            callback(SamplerStep(i, t, x, x0))
    return x


def _churn(
    schedule_sigmas: torch.Tensor,
    t: int,
    sigma: float,
    steps: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
) -> int:
    """Karras et al. 2022, Algorithm 2, lines 4-6: the raised noise level sigma-hat =
    sigma (1 + gamma), snapped up to the nearest trained timestep so the model is only called
    at timesteps it knows. Returns that timestep (``t`` itself when no churn applies)."""
    if s_churn <= 0 or not (s_tmin <= sigma <= s_tmax):
        return t
    gamma = min(s_churn / steps, 2**0.5 - 1)
    wanted = sigma * (1 + gamma)
    above = torch.nonzero(schedule_sigmas >= wanted).flatten()
    return int(above[0]) if above.numel() else schedule_sigmas.numel() - 1


def _karras_ode(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None,
    *,
    second_order: bool,
    spacing: str,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    callback: Callable[[SamplerStep], None] | None,
    progress: bool,
    name: str,
) -> torch.Tensor:
    """Euler / Heun on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
    (Karras et al. 2022, Eq. 4 and Algorithms 1-2) in the VE variable x~ = x_t / sqrt(abar_t)."""
    _check_finite(x, "the starting tensor")
    ts = resolve_timesteps(schedule, steps, spacing)
    all_sigmas = schedule.sigmas
    sigmas = [float(all_sigmas[t]) for t in ts] + [0.0]
    x_ve = x * (1 + sigmas[0] ** 2) ** 0.5

    def denoised_at(x_ve: torch.Tensor, t: int, sigma: float) -> torch.Tensor:
        x0, _ = denoise(model, schedule, x_ve / (1 + sigma**2) ** 0.5, t)
        return x0

    for i in tqdm(range(len(ts)), desc=name, disable=not progress, leave=False):
        t, sigma, sigma_next = ts[i], sigmas[i], sigmas[i + 1]
        t_hat = _churn(all_sigmas, t, sigma, len(ts), s_churn, s_tmin, s_tmax)
        if t_hat != t:
            sigma_hat = float(all_sigmas[t_hat])
            x_ve = x_ve + s_noise * (sigma_hat**2 - sigma**2) ** 0.5 * _noise_like(x_ve, generator)
            t, sigma = t_hat, sigma_hat
        x0 = denoised_at(x_ve, t, sigma)
        slope = (x_ve - x0) / sigma
        x_next = x_ve + (sigma_next - sigma) * slope
        if second_order and sigma_next > 0:
            slope_next = (x_next - denoised_at(x_next, ts[i + 1], sigma_next)) / sigma_next
            x_next = x_ve + (sigma_next - sigma) * 0.5 * (slope + slope_next)
        x_ve = x_next
        if callback is not None:
            callback(SamplerStep(i, t, x_ve / (1 + sigma_next**2) ** 0.5, x0))
    return x_ve


def euler(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "karras",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the
    Heun correction); ``s_churn > 0`` adds Algorithm 2's stochastic churn."""
    return _karras_ode(
        model, schedule, x, steps, generator, second_order=False, spacing=spacing,
        s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
        callback=callback, progress=progress, name="euler",
    )  # fmt: skip


def heun(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "karras",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Algorithms 1-2):
    2 * steps - 1 model calls (the last step, to sigma = 0, is an Euler step)."""
    return _karras_ode(
        model, schedule, x, steps, generator, second_order=True, spacing=spacing,
        s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
        callback=callback, progress=progress, name="heun",
    )  # fmt: skip


def dpmpp_2m(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "karras",
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), the multistep 2nd-order data-prediction
    solver of the probability-flow ODE in lambda = log(alpha_t / sigma_t).

    With h = lambda_t' - lambda_t and r = h_prev / h:
    x_t' = (sigma_t' / sigma_t) x_t - alpha_t' (e^{-h} - 1) D, where D = x0 on the first and
    last steps and D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev otherwise (the last step, to
    sigma = 0, is first order as in diffusers' ``final_sigmas_type="zero"``).
    ``generator`` is unused (the solver is deterministic).
    """
    ts, prevs, iterate = _plan(schedule, x, steps, spacing, progress, "dpmpp_2m")
    previous_x0: torch.Tensor | None = None
    previous_h = 0.0
    for i, (t, t_prev) in enumerate(iterate(list(zip(ts, prevs, strict=True)))):
        x0, _ = denoise(model, schedule, x, t)
        abar, abar_next = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
        alpha_next, sigma_next, sigma = abar_next**0.5, (1 - abar_next) ** 0.5, (1 - abar) ** 0.5
        if t_prev < 0:  # final step to sigma = 0: x_t' = x0 exactly
            x = x0
        else:
            h = (
                0.5
                * (
                    torch.logit(torch.tensor(abar_next, dtype=torch.float64))
                    - torch.logit(torch.tensor(abar, dtype=torch.float64))
                ).item()
            )
            if previous_x0 is None:
                d = x0
            else:
                r = previous_h / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
            x = (sigma_next / sigma) * x - alpha_next * torch.expm1(torch.tensor(-h)).item() * d
            previous_h = h
        previous_x0 = x0
        if callback is not None:
            callback(SamplerStep(i, t, x, x0))
    return x


def sde(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "leading",
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler-Maruyama on the reverse-time VP SDE (Song et al. 2021, Eq. 6 with the VP SDE of
    Eq. 11): dx = [-1/2 beta x - beta grad log p_t(x)] dt + sqrt(beta) dw-bar.

    Between consecutive visited timesteps t > t' the integrated beta is b = 1 - abar_t/abar_t',
    giving x_t' = x_t + b/2 x_t + b s(x_t) + sqrt(b) z with the score s = -eps / sqrt(1 - abar_t).
    The final step returns the denoised estimate x0 (the "last-step denoising" of Song et al.
    2021, Appendix G), so ``steps`` model calls include it.
    """
    ts, prevs, iterate = _plan(schedule, x, steps, spacing, progress, "sde")
    for i, (t, t_prev) in enumerate(iterate(list(zip(ts, prevs, strict=True)))):
        x0, eps = denoise(model, schedule, x, t)
        if t_prev < 0:
            x = x0
        else:
            abar, abar_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
            b = 1 - abar / abar_prev
            score = -eps / (1 - abar) ** 0.5
            x = x + 0.5 * b * x + b * score + b**0.5 * _noise_like(x, generator)
        if callback is not None:
            callback(SamplerStep(i, t, x, x0))
    return x


RENOISE = ("fresh", "ddim")  # the lcm sampler's re-noising: LCM's fresh noise, or MCM's DDIM


def lcm(
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    spacing: str | Sequence[int] = "lcm",
    original_steps: int = 50,
    timestep_scaling: float = 10.0,
    renoise: str = "fresh",
    callback: Callable[[SamplerStep], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; Luo et al. 2023, Alg. 3) for
    consistency models and latent consistency models (LCM, LCM-LoRA).

    ``model`` is the raw network F of ``schedule.prediction_type``; the sampler applies the
    boundary parameterisation f(x, t) = c_skip(t) x + c_out(t) x0(F) (see
    :func:`difflab.schedules.consistency_function`). Each step jumps to f(x_t, t) and, except on
    the last, re-noises it to the next timestep: x_t' = sqrt(abar_t') f + sqrt(1 - abar_t') z.
    ``spacing = "lcm"`` visits the timesteps diffusers' LCMScheduler visits
    (:func:`difflab.schedules.lcm_timesteps` on a solver grid of ``original_steps`` intervals,
    the grid the model was distilled on); other spacings and explicit sequences work as for the
    other samplers. With the same generator this equals diffusers' LCMScheduler step by step.

    ``renoise = "ddim"`` re-noises deterministically instead, with the noise the step implies,
    eps = (x_t - sqrt(abar_t) f) / sqrt(1 - abar_t): the sampler of multistep consistency models
    (Heek et al. 2024, Alg. 1), whose f maps to the start of a segment by exactly that DDIM
    jump (``segments`` of :class:`~difflab.distill.ConsistencyDistillation`); it is diffusers'
    TCDScheduler with gamma = 0 (which also stops its last step at t = 0).
    """
    if renoise not in RENOISE:
        raise ValueError(f"unknown renoise {renoise!r}; use one of {', '.join(RENOISE)}.")
    if isinstance(spacing, str) and spacing == "lcm":
        _check_finite(x, "the starting tensor")
        spacing = lcm_timesteps(schedule, steps, original_steps).tolist()
    ts, prevs, iterate = _plan(schedule, x, steps, spacing, progress, "lcm")
    for i, (t, t_prev) in enumerate(iterate(list(zip(ts, prevs, strict=True)))):
        x0, _ = denoise(model, schedule, x, t)
        denoised = consistency_function(x, x0, t, timestep_scaling)
        if i < len(ts) - 1:
            abar, abar_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
            if renoise == "ddim":
                noise = (x - abar**0.5 * denoised) / (1 - abar) ** 0.5
            else:
                noise = _noise_like(x, generator)
            x = abar_prev**0.5 * denoised + (1 - abar_prev) ** 0.5 * noise
        else:
            x = denoised
        if callback is not None:
            callback(SamplerStep(i, t, x, denoised))
    return x


DISTILLED_SAMPLERS = ("lcm",)
"""Samplers that need a distilled model (a consistency function), not any denoiser: the
analytic oracle (``difflab oracle``) leaves them out."""

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "sde": sde,
    "lcm": lcm,
}
"""Samplers by name (``ddim_invert`` maps data to noise and is not listed)."""


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler function called ``name``; a clear error lists the valid names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.") from None


def sample(
    name: str,
    model: Model,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Run the sampler called ``name`` (see :data:`SAMPLERS`) with the shared signature."""
    return get_sampler(name)(model, schedule, x, steps, generator, **options)
