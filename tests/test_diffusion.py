"""The forward process and the DDPM training objective."""

import pytest
import torch

from difflab.diffusion import loss_weight, q_sample, training_loss
from difflab.oracle import example_mixture
from difflab.schedules import make_schedule


def test_q_sample_has_the_right_moments():
    s = make_schedule()
    x0 = torch.full((20000, 1), 2.0, dtype=torch.float64)
    t = torch.full((20000,), 300)
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_t = q_sample(x0, t, s, noise)
    abar = float(s.alphas_cumprod[300])
    assert abs(float(x_t.mean()) - 2 * abar**0.5) < 4 * ((1 - abar) / 20000) ** 0.5
    assert abs(float(x_t.var()) - (1 - abar)) < 0.03 * (1 - abar)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_loss_is_zero_for_a_model_that_returns_the_target(prediction_type):
    s = make_schedule(prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 4, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    noise = torch.randn(16, 4, generator=g)
    abar = s.alpha_bar(t, like=x0)
    target = {
        "epsilon": noise,
        "sample": x0,
        "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0,
    }[prediction_type]
    loss = training_loss(lambda x, tt: target, s, x0, t=t, noise=noise)
    assert float(loss) < 1e-10
    assert float(training_loss(lambda x, tt: target + 0.1, s, x0, t=t, noise=noise)) > 1e-3


def test_exact_denoiser_beats_perturbed_ones():
    """The closed-form eps* minimises the expected loss (it is E[eps | x_t])."""
    s = make_schedule()
    mixture = example_mixture(2)
    x0, _ = mixture.sample(8000, torch.Generator().manual_seed(1))
    exact = mixture.denoiser(s)

    def loss_of(model):
        return float(training_loss(model, s, x0, generator=torch.Generator().manual_seed(2)))

    best = loss_of(exact)
    assert best < loss_of(lambda x, t: exact(x, t) * 1.05)
    assert best < loss_of(lambda x, t: exact(x, t) + 0.05)


def test_model_kwargs_reach_the_model():
    s = make_schedule()
    seen = {}

    def model(x, t, context=None):
        seen["context"] = context
        return torch.zeros_like(x)

    training_loss(model, s, torch.zeros(2, 3), generator=torch.Generator(), context="caption")
    assert seen["context"] == "caption"


@pytest.mark.parametrize(
    "prediction_type,expected",
    [
        ("epsilon", lambda snr: torch.clamp(snr, max=5.0) / snr),
        ("sample", lambda snr: torch.clamp(snr, max=5.0)),
        ("v_prediction", lambda snr: torch.clamp(snr, max=5.0) / (snr + 1)),
    ],
)
def test_min_snr_weights_follow_hang_et_al(prediction_type, expected):
    s = make_schedule(prediction_type=prediction_type)
    t = torch.tensor([0, 100, 500, 999])
    assert torch.allclose(loss_weight(s, t, "min_snr", 5.0), expected(s.snr[t]))
    assert torch.equal(loss_weight(s, t, "uniform"), torch.ones(4, dtype=torch.float64))
    # the eps-weight is 1 where SNR < gamma (high noise) and < 1 at low noise
    w = loss_weight(make_schedule(), t, "min_snr", 5.0)
    assert w[-1] == 1.0 and w[0] < 0.01
