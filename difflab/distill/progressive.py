"""Progressive distillation (Salimans & Ho 2022) with guidance distilled into the student
(Meng et al. 2023).

- **Stage 1** (Meng et al. 2023, Sec. 4.1, Eq. 6): a student that takes the guidance weight w
  as an input learns the *guided* teacher's clean-sample estimate at every timestep:
  x-hat_eta(z_t, w) ~ (1 - s) x-hat(z_t, empty) + s x-hat(z_t, c), with s drawn per example.
- **Stage 2** (Salimans & Ho 2022, Alg. 2; Meng et al. 2023, Sec. 4.2): rounds that halve the
  step count. In each, the student (initialised from its teacher) learns to make in one DDIM
  step what two deterministic DDIM steps of the teacher make: from z_t, the teacher goes
  z_t -> z_t' -> z_t'' (t' the midpoint, t'' the next student timestep), and the student
  regresses its x0 estimate on the x-tilde for which one DDIM step from z_t lands on z_t''
  exactly (Alg. 2):

      x-tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

  weighted by the truncated SNR max(SNR_t, 1) (Sec. 4, "truncated SNR" weighting, Eq. 10).
  Then the student becomes the next teacher.

Timesteps are discrete: a student of N steps visits the trailing grid of N steps (Lin et al.
2024), which nests in the 2N-step grid of its teacher for the powers of two that divide
T = 1000's multiples (:func:`round_grid` checks it), so one student step spans two teacher steps.
The students here predict v (``student_prediction_type``, Salimans & Ho 2022, Sec. 4: eps
cannot give x0 at the 1-step end, where alpha_t ~ 0); stage 1 is where the switch is learnt.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from difflab.diffusion import q_sample
from difflab.distill.common import conditional_denoiser, frozen, guided_denoiser, index_on_grid
from difflab.samplers import ddim_step, denoise
from difflab.schedules import NoiseSchedule, timesteps


def truncated_snr_weight(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """max(SNR(t), 1) per example [B] (float64): the "truncated SNR" weighting of the x-space
    error (Salimans & Ho 2022, Sec. 4, Eq. 10), which keeps the weight of the high-noise steps
    that few-step samplers rely on from vanishing."""
    return schedule.snr[t.long().cpu()].clamp(min=1.0)


def progressive_target(
    z_t: torch.Tensor,
    z_next: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    schedule: NoiseSchedule,
) -> torch.Tensor:
    """The x-tilde of Salimans & Ho 2022, Alg. 2: the clean-sample estimate with which one DDIM
    step from ``z_t`` at ``t`` lands exactly on ``z_next`` at ``t_next`` (-1 = clean, where
    x-tilde = z_next):  x-tilde = (z_next - (s'/s) z_t) / (a' - (s'/s) a), with a = sqrt(abar),
    s = sqrt(1 - abar)."""
    abar, abar_next = schedule.alpha_bar(t, like=z_t), schedule.alpha_bar(t_next, like=z_t)
    ratio = (1 - abar_next).sqrt() / (1 - abar).sqrt()
    return (z_next - ratio * z_t) / (abar_next.sqrt() - ratio * abar.sqrt())


def round_grid(schedule: NoiseSchedule, student_steps: int) -> torch.Tensor:
    """The teacher's 2N-step trailing grid followed by -1 (clean) [2N + 1]: the student of N
    steps visits its even entries, the teacher also the odd ones (the midpoints). Raises when the
    N-step trailing grid is not the even half of the 2N-step one (the student would then be
    trained on timesteps its sampler does not visit)."""
    if student_steps < 1 or 2 * student_steps > schedule.num_train_timesteps:
        raise ValueError(
            f"a progressive round needs 1 <= student steps <= T/2, got {student_steps}."
        )
    teacher_grid = timesteps(schedule, 2 * student_steps, "trailing")
    if not torch.equal(teacher_grid[::2], timesteps(schedule, student_steps, "trailing")):
        raise ValueError(
            f"the {student_steps}-step trailing grid is not every other timestep of the "
            f"{2 * student_steps}-step one on this {schedule.num_train_timesteps}-step schedule; "
            "start the rounds from a power of two (e.g. 64) that divides it evenly."
        )
    return torch.cat([teacher_grid, torch.tensor([-1])])


class ProgressiveDistillation(nn.Module):
    """One stage of guided progressive distillation; ``forward`` returns the loss.

    Args:
        student: the trainable denoiser (takes the guidance weight as an input).
        teacher: the frozen teacher: the original model (guided by classifier-free guidance) in
            stage 1, the previous round's student (weight as input) in later rounds.
        teacher_schedule / student_schedule: the shared noise schedule, each declaring its
            model's prediction type (a v-predicting student of an eps-predicting teacher).
        student_steps: N, the student's sampling steps (its teacher takes 2N); None for stage 1.
        empty: the empty prompt's text states [1, L, D] (classifier-free guidance of stage 1).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        teacher_schedule: NoiseSchedule,
        student_schedule: NoiseSchedule,
        student_steps: int | None,
        empty: torch.Tensor,
    ) -> None:
        super().__init__()
        if not torch.equal(teacher_schedule.betas, student_schedule.betas):
            raise ValueError("teacher and student must share one noise schedule.")
        self.student, self.teacher = student, frozen(teacher)
        self.teacher_schedule, self.student_schedule = teacher_schedule, student_schedule
        self.student_steps = student_steps
        self.register_buffer("empty", empty.detach().clone(), persistent=False)
        grid = None if student_steps is None else round_grid(student_schedule, student_steps)
        self.register_buffer("grid", grid, persistent=False)

    def train(self, mode: bool = True) -> ProgressiveDistillation:
        super().train(mode)
        self.teacher.eval()  # the teacher stays in eval mode (no dropout) while the student trains
        return self

    def teacher_target(
        self, x0: torch.Tensor, context: torch.Tensor, u: torch.Tensor, noise: torch.Tensor,
        scale: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(z_t, t, target): the noised input, its timesteps and the x0 the student should
        predict there - the guided teacher's own estimate (stage 1) or x-tilde (rounds)."""
        T = self.student_schedule.num_train_timesteps
        teacher = guided_denoiser(self.teacher, context, self.empty, scale)
        with torch.no_grad():
            if self.student_steps is None:
                t = index_on_grid(u, T)
                z_t = q_sample(x0, t, self.student_schedule, noise)
                target, _ = denoise(teacher, self.teacher_schedule, z_t, t)
                return z_t, t, target
            i = index_on_grid(u, self.student_steps)
            t, t_mid, t_next = self.grid[2 * i], self.grid[2 * i + 1], self.grid[2 * i + 2]
            z_t = q_sample(x0, t, self.student_schedule, noise)
            z_mid = ddim_step(teacher, self.teacher_schedule, z_t, t, t_mid)
            z_next = ddim_step(teacher, self.teacher_schedule, z_mid, t_mid, t_next)
            target = progressive_target(z_t, z_next, t, t_next, self.student_schedule)
        return z_t, t, target

    def forward(
        self, x0: torch.Tensor, context: torch.Tensor, u: torch.Tensor, noise: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The truncated-SNR-weighted squared error between the student's x0 estimate and the
        target (Salimans & Ho 2022, Alg. 2, last line; Meng et al. 2023, Eq. 6-7)."""
        z_t, t, target = self.teacher_target(x0, context, u, noise, scale)
        student = conditional_denoiser(self.student, context, scale)
        x0_student, _ = denoise(student, self.student_schedule, z_t, t)
        error = (x0_student.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (truncated_snr_weight(self.student_schedule, t).to(error) * error).mean()


def student_schedule(schedule: NoiseSchedule, prediction_type: str) -> NoiseSchedule:
    """The same noise schedule declaring the student's prediction type."""
    return dataclasses.replace(schedule, prediction_type=prediction_type)


def halving_rounds(start_steps: int) -> list[int]:
    """The students' step counts when the teacher starts at ``start_steps``: N/2, N/4, ..., 1
    (Salimans & Ho 2022, Alg. 2's outer loop)."""
    if start_steps < 2 or start_steps & (start_steps - 1):
        raise ValueError(
            f"progressive distillation halves the step count down to 1, so the teacher's steps "
            f"must be a power of two >= 2 (e.g. 64); got {start_steps}."
        )
    rounds, n = [], start_steps
    while n > 1:
        n //= 2
        rounds.append(n)
    return rounds
