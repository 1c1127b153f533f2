"""Consistency distillation and consistency training (Song et al. 2023), in the latent,
guided, skipping-step form of latent consistency models (LCM, Luo et al. 2023) and of LCM-LoRA
(Luo et al. 2023b).

A consistency function maps any point of a probability-flow ODE trajectory to its start:
f(x, t) = c_skip(t) x + c_out(t) x0-hat(F_theta(x, w, t)) with c_skip(0) = 1, c_out(0) = 0, so
f(x, t_min) = x holds by construction (Song et al. 2023, Eq. 7; Luo et al. 2023, Eq. 8; see
:func:`difflab.schedules.consistency_function`). Training makes f agree on neighbouring points
of a trajectory (Luo et al. 2023, Eq. 9 / Song et al. 2023, Eq. 10):

    L = E d( f_theta(z_{t_{n+k}}, w, c, t_{n+k}),  f_theta-(z-hat_{t_n}, w, c, t_n) )

- **distillation** (LCM): z-hat_{t_n} is one DDIM step of the *guided* teacher from
  z_{t_{n+k}}, skipping k trained timesteps (the solver grid of
  :func:`~difflab.schedules.solver_timesteps`); w is drawn per example and fed to the student
  (the augmented PF-ODE of Luo et al. 2023, Eq. 6-7);
- **training without a teacher** (Song et al. 2023, Alg. 3): z-hat_{t_n} = alpha_{t_n} x +
  sigma_{t_n} z with the same data x and noise z that made z_{t_{n+1}} (the one-sample estimate
  of the score), on a grid of N(k) points and a target decay mu(k) that grow during training
  (Appendix C);
- **multistep consistency** (Heek et al. 2024, Alg. 2): with ``segments`` = S > 1 the ODE
  time is cut into S segments at the timesteps that S-step sampling visits, and f maps a point
  only to the start of its own segment (the point one deterministic DDIM jump with f's x0
  reaches there), not to the clean end; the loss stays on x0, whose target is the x0 whose DDIM
  jump from z_{t_{n+k}} lands where the target network's jump from z-hat_{t_n} lands
  (:func:`segment_target`). S = 1 is LCM exactly; S = 4 is sampled in 4 deterministic steps;
- **LCM-LoRA**: the student is the frozen teacher plus a LoRA adapter; the teacher is the same
  network with the adapter switched off, and the target is the online student without
  gradients (``target_decay = 0``, as the LCM-LoRA code does).

theta- is the target network: an EMA of the student with decay mu (0.95 in LCM), kept as a
frozen sub-module and updated in :meth:`ConsistencyDistillation.after_optimizer_step`, which the
Trainer calls after every optimizer update - so the target and the update counter are saved
in, and restored from, every checkpoint with the student, and a resumed run is bit-identical.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from difflab.diffusion import q_sample
from difflab.distill.common import (
    conditional_denoiser,
    frozen,
    guided_denoiser,
    index_on_grid,
    pseudo_huber,
)
from difflab.samplers import ddim_step, denoise
from difflab.schedules import (
    NoiseSchedule,
    consistency_function,
    lcm_timesteps,
    solver_timesteps,
)

LOSSES = ("l2", "huber")
CLEAN = -1  # the timestep index of the clean end of the ODE (as ddim_step's t_next)


def check_segments(segments: int, num_intervals: int, fixed_grid: bool = True) -> None:
    """Multistep consistency needs 1 <= S <= N segments on a fixed solver grid of N intervals
    (each segment holds at least one solver step); consistency training's growing grid has no
    fixed segment edges, so it takes S = 1 only."""
    if not isinstance(segments, int) or not 1 <= segments <= num_intervals:
        raise ValueError(
            f"multistep consistency takes 1 to num_intervals = {num_intervals} segments (each "
            f"needs a solver step), got segments = {segments!r}."
        )
    if segments > 1 and not fixed_grid:
        raise ValueError(
            "segments > 1 (multistep consistency) needs distillation's fixed solver grid; "
            "consistency training (method = 'train') grows its grid, so use segments = 1."
        )


def segment_edges(schedule: NoiseSchedule, num_intervals: int, segments: int) -> torch.Tensor:
    """For every entry of the solver grid (:func:`~difflab.schedules.solver_timesteps`), the
    lower edge of its segment in multistep consistency (Heek et al. 2024, Sec. 3): the largest
    timestep below it that ``segments``-step sampling (:func:`~difflab.schedules.lcm_timesteps`)
    visits, or ``CLEAN`` (-1) where there is none - the last segment ends at the data, as in
    one-segment consistency models. Returns a long tensor shaped like the grid."""
    grid = solver_timesteps(schedule, num_intervals)
    tops = lcm_timesteps(schedule, segments, num_intervals)[1:]  # the timesteps after the first
    edges = torch.full_like(grid, CLEAN)
    for top in tops.tolist():
        edges = torch.where((grid > top) & (edges < top), torch.full_like(grid, top), edges)
    return edges


def segment_target(
    schedule: NoiseSchedule,
    z: torch.Tensor,
    t: torch.Tensor,
    z_prev: torch.Tensor,
    t_prev: torch.Tensor,
    x0_prev: torch.Tensor,
    t_edge: torch.Tensor,
) -> torch.Tensor:
    """The x0 target of multistep consistency distillation (Heek et al. 2024, Alg. 2), per
    sample. The target network's x0 estimate ``x0_prev`` at (``z_prev``, ``t_prev``) moves
    z_prev by one DDIM jump to the segment edge ``t_edge`` (z_prev itself where t_prev is the
    edge; x0_prev where the edge is ``CLEAN``); the target is the x0 whose DDIM jump from
    (``z``, ``t``) lands on that same point: with r = sigma_e / sigma_t,
    x0 = (z_e - r z) / (alpha_e - r alpha_t), which the jump x_e = alpha_e x0 + r (z - alpha_t x0)
    solves for. On the last segment (edge CLEAN) it is x0_prev, the LCM target."""
    dtype = x0_prev.dtype
    z, z_prev, x0_prev = z.double(), z_prev.double(), x0_prev.double()
    abar_t, abar_prev, abar_edge = (schedule.alpha_bar(s, like=z) for s in (t, t_prev, t_edge))
    eps_prev = (z_prev - abar_prev.sqrt() * x0_prev) / (1 - abar_prev).sqrt()
    z_edge = q_sample(x0_prev, t_edge, schedule, eps_prev)  # the DDIM jump; z_prev if on the edge
    ratio = ((1 - abar_edge) / (1 - abar_t)).sqrt()
    target = (z_edge - ratio * z) / (abar_edge.sqrt() - ratio * abar_t.sqrt())
    return target.to(dtype)


@dataclass(frozen=True)
class TrainingCurriculum:
    """The discretisation and target-decay schedules of consistency training (Song et al. 2023,
    Appendix C, Eq. for N(k) and mu(k)): N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
    points, mu(k) = exp(s0 log(mu0) / N(k)), for update k of K."""

    total_steps: int
    s0: int = 2
    s1: int = 150
    mu0: float = 0.9

    def points(self, k: int) -> int:
        fraction = min(k, self.total_steps) / self.total_steps
        inner = math.sqrt(fraction * ((self.s1 + 1) ** 2 - self.s0**2) + self.s0**2)
        return math.ceil(inner - 1) + 1

    def decay(self, k: int) -> float:
        return math.exp(self.s0 * math.log(self.mu0) / self.points(k))


class ConsistencyDistillation(nn.Module):
    """Consistency distillation / training as one module; ``forward`` returns the loss.

    Args:
        student: the trainable network F_theta (its prediction type is the schedule's).
        schedule: the noise schedule (declaring the student's prediction type).
        teacher: the frozen teacher (guided by classifier-free guidance, or with the weight as
            input if it takes one); None for consistency training (Song et al. 2023, Alg. 3).
        teacher_schedule: the teacher's schedule (its prediction type); default ``schedule``.
        num_intervals: solver steps N on the grid (the skip k = T // N; LCM: 50, k = 20).
        curriculum: for consistency training: N(k) and mu(k) (replaces ``num_intervals`` and
            ``target_decay``).
        target_decay: mu of the EMA target network (LCM: 0.95); 0 = the online student without
            gradients (LCM-LoRA, and Song & Dhariwal 2023's improved consistency training).
        timestep_scaling: the boundary scalings' time scale (LCM: 10, see
            :func:`~difflab.schedules.consistency_scalings`).
        loss: ``"l2"`` or ``"huber"`` (pseudo-Huber with ``huber_c``).
        empty: the empty prompt's text states [1, L, D] (classifier-free guidance of the
            teacher).
        segments: S of multistep consistency (Heek et al. 2024): f maps to the start of its
            segment of the ODE; 1 = a consistency model / LCM. Sample with S steps of the
            ``lcm`` sampler with ``renoise = "ddim"``.
    """

    def __init__(
        self,
        student: nn.Module,
        schedule: NoiseSchedule,
        *,
        teacher: nn.Module | None = None,
        teacher_schedule: NoiseSchedule | None = None,
        num_intervals: int = 50,
        curriculum: TrainingCurriculum | None = None,
        target_decay: float = 0.95,
        timestep_scaling: float = 10.0,
        loss: str = "l2",
        huber_c: float = 0.001,
        empty: torch.Tensor | None = None,
        segments: int = 1,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown consistency loss {loss!r}; use one of {', '.join(LOSSES)}.")
        if not 0.0 <= target_decay < 1.0:
            raise ValueError(f"the target decay mu must lie in [0, 1), got {target_decay}.")
        if teacher is not None and empty is None:
            raise ValueError("distilling a guided teacher needs the empty prompt's states.")
        solver_timesteps(schedule, num_intervals)  # validates the grid
        check_segments(segments, num_intervals, fixed_grid=curriculum is None)
        edges = segment_edges(schedule, num_intervals, segments) if segments > 1 else None
        self.register_buffer("edges", edges, persistent=False)  # per solver-grid entry
        self.student = student
        self.teacher = None if teacher is None else frozen(teacher)
        self.schedule = schedule
        self.teacher_schedule = teacher_schedule or schedule
        self.num_intervals, self.curriculum = num_intervals, curriculum
        self.target_decay = target_decay
        self.timestep_scaling, self.loss, self.huber_c = timestep_scaling, loss, huber_c
        uses_target = target_decay > 0 or curriculum is not None
        self.target = frozen(copy.deepcopy(student)) if uses_target else None
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("empty", None if empty is None else empty.detach().clone(), False)

    def train(self, mode: bool = True) -> ConsistencyDistillation:
        super().train(mode)
        for part in (self.teacher, self.target):
            if part is not None:
                part.eval()
        return self

    def intervals(self) -> int:
        """The solver steps N of the grid now (grows with the updates in consistency training)."""
        if self.curriculum is None:
            return self.num_intervals
        return self.curriculum.points(int(self.num_updates)) - 1

    def decay(self) -> float:
        """mu, the target network's EMA decay now."""
        if self.curriculum is None:
            return self.target_decay
        return self.curriculum.decay(int(self.num_updates))

    def consistency(
        self, net: nn.Module, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """f(z, w, c, t) of ``net``: the boundary-conditioned x0 estimate (Luo et al. 2023,
        Eq. 8)."""
        x0, _ = denoise(conditional_denoiser(net, context, scale), self.schedule, z, t)
        return consistency_function(z, x0, t, self.timestep_scaling)

    def forward(
        self, x0: torch.Tensor, context: torch.Tensor, u: torch.Tensor, noise: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The consistency loss of one batch (Luo et al. 2023, Alg. 1; Song et al. 2023,
        Alg. 2-3)."""
        count = self.intervals()
        grid = solver_timesteps(self.schedule, count).to(x0.device)
        n = index_on_grid(u, count)
        t_start, t_end = grid[n + 1], grid[n]  # t_{n+k} and t_n
        z = q_sample(x0, t_start, self.schedule, noise)
        online = self.consistency(self.student, z, t_start, context, scale)
        with torch.no_grad():
            if self.teacher is None:  # Song et al. 2023, Alg. 3: the same x and z one step lower
                z_prev = q_sample(x0, t_end, self.schedule, noise)
            else:  # one DDIM step of the guided teacher (the augmented PF-ODE, Luo et al. Eq. 7)
                teacher = guided_denoiser(self.teacher, context, self.empty, scale)
                z_prev = ddim_step(teacher, self.teacher_schedule, z, t_start, t_end)
            target_net = self.student if self.target is None else self.target
            target = self.consistency(target_net, z_prev, t_end, context, scale)
            if self.edges is not None:  # Heek et al. 2024, Alg. 2: to the start of the segment
                target = segment_target(
                    self.schedule, z, t_start, z_prev, t_end, target, self.edges[n + 1]
                )
        if self.loss == "huber":
            return pseudo_huber(online, target, self.huber_c)
        return (online.float() - target.float()).pow(2).mean()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """theta- <- mu theta- + (1 - mu) theta (Luo et al. 2023, Alg. 1, last line), then count
        the update. Called by the Trainer after every optimizer update."""
        if self.target is not None:
            mu = self.decay()
            online = dict(self.student.named_parameters())
            for name, target in self.target.named_parameters():
                target.lerp_(online[name].detach().to(target.dtype), 1.0 - mu)
        self.num_updates += 1
