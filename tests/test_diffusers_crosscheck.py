"""Our samplers against diffusers' schedulers on the same schedule, spacing and model.

A deterministic nonlinear stand-in model drives both implementations in float64 on the same
alphas_cumprod. Every single step must agree to 1e-5, which checks the update rules, the timestep
spacings, the multistep history of DPM-Solver++ and the order of DDPM's noise draws.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from difflab import samplers
from difflab.guidance import dynamic_threshold, static_threshold, thresholded
from difflab.schedules import make_schedule, prediction_from_x0_and_eps, timesteps

SHAPE = (3, 4, 5, 5)


def stand_in_model(schedule, x0_range: float = 0.9):
    """A fixed nonlinear denoiser with a bounded x0 estimate (like a trained image model, within
    +-``x0_range``), in the schedule's prediction type; its output depends on both x_t and t."""
    g = torch.Generator().manual_seed(123)
    weight = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.7

    def model(x, t):
        alpha_bar = schedule.alpha_bar(t, like=x)
        mixed = torch.einsum("oc,bchw->bohw", weight, x) * alpha_bar.sqrt()
        x0 = x0_range * torch.tanh(mixed + 0.3 * torch.cos(t.float() / 150.0).reshape(-1, 1, 1, 1))
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return prediction_from_x0_and_eps(x0, eps, alpha_bar, schedule.prediction_type)

    return model


def assert_same_steps(
    ours_fn, scheduler, schedule, model, x, generator=None, timesteps=None, **step_kw
):
    """Run our sampler, recording its state after every step; then feed each of our states to
    ``scheduler.step`` and require its next state to equal ours within 1e-5 (one step at a time,
    so float32 round-off does not accumulate), and the final samples to agree within 1e-4."""
    # Share the exact float64 alphas_cumprod: diffusers keeps them in float32, whose rounding
    # alone moves 1 - alpha-bar near t = 0 by ~1e-3 relative, far more than any algorithmic
    # difference we want to detect.
    scheduler.alphas_cumprod = schedule.alphas_cumprod.clone()
    states = []
    final = ours_fn(lambda step: states.append(step.x.clone()))
    if timesteps is None:
        scheduler.set_timesteps(len(states))
    else:
        scheduler.set_timesteps(timesteps=timesteps)
    assert len(scheduler.timesteps) == len(states)
    current = x
    for i, t in enumerate(scheduler.timesteps):
        t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long)
        theirs = scheduler.step(
            model(current, t_batch), t, current, generator=generator, **step_kw
        ).prev_sample
        assert torch.allclose(states[i], theirs, atol=1e-5, rtol=1e-5), (
            f"step {i} (t={int(t)}): max difference {(states[i] - theirs).abs().max():.2e}"
        )
        current = states[i]
    assert torch.equal(final, states[-1])


def start(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# diffusers' DDIMScheduler steps from t to t - T // N whatever the spacing, which for
# "linspace" is not the next timestep it visits; our DDIM always steps to the next visited
# timestep, so the comparison covers the spacings where the two coincide.
@pytest.mark.parametrize("schedule_name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers(schedule_name, prediction_type, spacing):
    schedule = make_schedule(schedule_name, 1000, prediction_type=prediction_type)
    reference = DDIMScheduler(
        beta_schedule="squaredcos_cap_v2" if schedule_name == "cosine" else schedule_name,
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing=spacing,
    )
    model = stand_in_model(schedule)
    assert_same_steps(
        lambda cb: samplers.ddim(model, schedule, start(), 20, spacing=spacing, callback=cb),
        reference,
        schedule,
        model,
        start(),
    )


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_stochastic_ddim_matches_diffusers(eta):
    schedule = make_schedule("linear", 1000)
    model = stand_in_model(schedule)
    assert_same_steps(
        lambda cb: samplers.ddim(
            model, schedule, start(), 10, torch.Generator().manual_seed(5), eta=eta, callback=cb
        ),
        DDIMScheduler(clip_sample=False),
        schedule,
        model,
        start(),
        torch.Generator().manual_seed(5),
        eta=eta,
    )


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("steps", [1000, 25])
def test_ddpm_matches_diffusers(variance, steps):
    schedule = make_schedule("linear", 1000)
    reference = DDPMScheduler(
        clip_sample=False,
        variance_type="fixed_small" if variance == "beta_tilde" else "fixed_large",
    )
    model = stand_in_model(schedule)
    assert_same_steps(
        lambda cb: samplers.ddpm(
            model,
            schedule,
            start(),
            steps,
            torch.Generator().manual_seed(9),
            variance=variance,
            callback=cb,
        ),
        reference,
        schedule,
        model,
        start(),
        torch.Generator().manual_seed(9),
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [4, 10, 20])
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_dpmpp_2m_matches_diffusers(prediction_type, steps, spacing):
    schedule = make_schedule(
        "scaled_linear", 1000, beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )
    reference = DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )
    model = stand_in_model(schedule)
    # Karras spacing: drive diffusers through our integer Karras timesteps.
    custom = timesteps(schedule, steps, "karras").tolist() if spacing == "karras" else None
    assert_same_steps(
        lambda cb: samplers.dpmpp_2m(model, schedule, start(), steps, spacing=spacing, callback=cb),
        reference,
        schedule,
        model,
        start(),
        timesteps=custom,
    )


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_ddim_scheduler(spacing):
    reference = DDIMScheduler(timestep_spacing=spacing)
    for steps in (1, 7, 50, 333):
        reference.set_timesteps(steps)
        ours = timesteps(make_schedule("linear", 1000), steps, spacing)
        assert ours.tolist() == reference.timesteps.tolist()


@pytest.mark.parametrize(
    "name,diffusers_name",
    [
        ("linear", "linear"),
        ("scaled_linear", "scaled_linear"),
        ("cosine", "squaredcos_cap_v2"),
    ],
)
def test_alphas_cumprod_match_diffusers(name, diffusers_name):
    ours = make_schedule(name, 1000).alphas_cumprod
    theirs = DDPMScheduler(beta_schedule=diffusers_name).alphas_cumprod.double()
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)


# x0 thresholding: our samplers driving a thresholded model (difflab.guidance.thresholded, what a
# pixel folder with clip_sample runs) against diffusers' schedulers thresholding x0 themselves.
# The stand-in's x0 reaches +-3, so clipping acts at every step.
THRESHOLDINGS = {
    "static": (static_threshold, {"clip_sample": True}),
    "dynamic": (
        lambda x0: dynamic_threshold(x0, 0.9),
        {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1e6},
    ),
}


@pytest.mark.parametrize("kind", sorted(THRESHOLDINGS))
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_thresholded_sampling_matches_diffusers_clip_sample(sampler, kind):
    """diffusers' DDIM re-derives eps from the clipped x0 only with use_clipped_model_output;
    DDPM's posterior mean takes the clipped x0 itself."""
    threshold, flags = THRESHOLDINGS[kind]
    schedule = make_schedule("linear", 1000)
    model = stand_in_model(schedule, x0_range=3.0)
    clipped = thresholded(model, schedule, threshold)
    if sampler == "ddpm":
        noise = {"generator": torch.Generator().manual_seed(9)}

        def ours(m, cb):
            return samplers.ddpm(m, schedule, start(), 25, torch.Generator().manual_seed(9),
                                 callback=cb)  # fmt: skip

        reference, step_kw = DDPMScheduler(**flags), {}
    else:
        noise = {}

        def ours(m, cb):
            return samplers.ddim(m, schedule, start(), 20, callback=cb)

        reference, step_kw = DDIMScheduler(**flags), {"use_clipped_model_output": True}
    assert_same_steps(lambda cb: ours(clipped, cb), reference, schedule, model, start(),
                      **noise, **step_kw)  # fmt: skip
    assert not torch.allclose(ours(clipped, None), ours(model, None), atol=1e-2)  # it acted
