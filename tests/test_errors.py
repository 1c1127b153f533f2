"""Bad input gets a clear error that names the problem and the fix."""

import pytest
import torch

from difflab import samplers
from difflab.diffusion import training_loss
from difflab.schedules import NoiseSchedule, make_schedule, timesteps

S = make_schedule()


def model(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: make_schedule("quadratic"),
            "unknown noise schedule 'quadratic'; use one of linear",
        ),
        (lambda: make_schedule(prediction_type="score"), "unknown prediction_type 'score'"),
        (lambda: samplers.get_sampler("plms"), "unknown sampler 'plms'; use one of ddpm, ddim"),
        (lambda: timesteps(S, 5, "uniform"), "unknown timestep spacing 'uniform'"),
        (
            lambda: timesteps(S, 1001),
            "num_steps=1001 exceeds the schedule's 1000 training timesteps; use at most 1000",
        ),
        (lambda: samplers.ddim(model, S, torch.zeros(2, 2), 2000), "use at most 1000 steps"),
        (lambda: timesteps(S, 0), "positive integer"),
        (lambda: NoiseSchedule(torch.tensor([0.1, 1.5])), r"in \(0, 1\)"),
        (
            lambda: samplers.ddpm(model, S, torch.zeros(1, 2), 10, variance="huge"),
            "'beta' or 'beta_tilde'",
        ),
        (lambda: samplers.ddim(model, S, torch.zeros(1, 2), 10, eta=-1), "non-negative"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_finite_start_is_refused():
    x = torch.zeros(2, 3)
    x[0, 1] = float("nan")
    for name in samplers.SAMPLERS:
        with pytest.raises(ValueError, match="starting tensor contains NaN"):
            samplers.sample(name, model, S, x, 5)


def test_non_finite_model_output_is_refused_with_the_step():
    def broken(x, t):
        return torch.full_like(x, float("inf")) if int(t[0]) < 500 else torch.zeros_like(x)

    with pytest.raises(
        ValueError, match=r"model output at timestep 400 contains NaN.*fp16 overflow"
    ):
        samplers.ddim(broken, S, torch.zeros(2, 3), 10)


def test_wrongly_shaped_model_output_is_refused():
    with pytest.raises(ValueError, match="prediction shaped like its input"):
        samplers.ddim(lambda x, t: x[:, :1], S, torch.zeros(2, 3), 10)


def test_non_finite_training_data_is_refused():
    x0 = torch.tensor([[0.0, float("inf")]])
    with pytest.raises(ValueError, match="x0 contains NaN"):
        training_loss(model, S, x0, generator=torch.Generator())
