"""Noise schedules, spacings and prediction-type conversions."""

import math

import pytest
import torch

from difflab.schedules import (
    NoiseSchedule,
    karras_sigmas,
    make_schedule,
    predicted_x0_and_eps,
    prediction_from_x0_and_eps,
    timesteps,
)


def test_linear_schedule_values_follow_ddpm():
    s = make_schedule("linear", 1000)
    assert math.isclose(float(s.betas[0]), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(s.betas[-1]), 0.02, rel_tol=1e-6)
    expected = torch.cumprod(1 - s.betas, 0)
    assert torch.allclose(s.alphas_cumprod, expected)
    assert torch.allclose(s.sigmas, ((1 - expected) / expected).sqrt())
    assert torch.allclose(s.log_snr, torch.log(expected / (1 - expected)))
    assert (s.log_snr[1:] < s.log_snr[:-1]).all()  # noise increases with t


def test_cosine_schedule_follows_nichol_dhariwal():
    s = make_schedule("cosine", 1000)

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):  # abar_t = f((t+1)/T) / f(0) away from the beta clip
        assert math.isclose(float(s.alphas_cumprod[t]), f((t + 1) / 1000) / f(0), rel_tol=1e-5)
    assert float(s.betas.max()) <= 0.999 + 1e-6  # betas are built in float32, like diffusers


def test_scaled_linear_is_linear_in_sqrt_beta():
    s = make_schedule("scaled_linear", 100, beta_start=0.00085, beta_end=0.012)
    root = s.betas.sqrt()
    assert torch.allclose(root[1:] - root[:-1], (root[1] - root[0]).expand(99), atol=1e-7)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_prediction_conversions_round_trip(prediction_type):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    abar = torch.rand(8, 1, generator=g) * 0.98 + 0.01
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    prediction = prediction_from_x0_and_eps(x0, eps, abar, prediction_type)
    x0_back, eps_back = predicted_x0_and_eps(prediction, x_t, abar, prediction_type)
    assert torch.allclose(x0_back, x0, atol=1e-5) and torch.allclose(eps_back, eps, atol=1e-5)


def test_v_is_defined_as_in_salimans_ho():
    x0, eps, abar = torch.tensor([0.3]), torch.tensor([-1.2]), torch.tensor([0.64])
    v = prediction_from_x0_and_eps(x0, eps, abar, "v_prediction")
    assert torch.allclose(v, 0.8 * eps - 0.6 * x0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "karras"])
@pytest.mark.parametrize("steps", [1, 5, 50, 999, 1000])
def test_spacings_are_strictly_decreasing_trained_timesteps(spacing, steps):
    ts = timesteps(make_schedule(), steps, spacing)
    assert ts.numel() == steps and ts.dtype == torch.long
    assert (ts[1:] < ts[:-1]).all() and 0 <= int(ts.min()) and int(ts.max()) <= 999


def test_spacing_endpoints():
    s = make_schedule()
    assert timesteps(s, 10, "leading").tolist() == list(range(900, -1, -100))
    assert timesteps(s, 10, "trailing")[0] == 999 and timesteps(s, 10, "trailing")[-1] == 99
    assert timesteps(s, 10, "karras")[0] == 999 and timesteps(s, 10, "karras")[-1] == 0


def test_karras_sigmas_follow_eq_5():
    sig = karras_sigmas(0.002, 80.0, 5, rho=7.0)
    assert math.isclose(float(sig[0]), 80.0) and math.isclose(float(sig[-1]), 0.002, rel_tol=1e-9)
    mid = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert math.isclose(float(sig[2]), mid, rel_tol=1e-9)


def test_schedule_config_round_trip():
    s = make_schedule("cosine", 50, prediction_type="v_prediction")
    cfg = s.to_config()
    again = NoiseSchedule(torch.tensor(cfg["betas"]), cfg["prediction_type"], cfg["name"])
    assert torch.equal(again.alphas_cumprod, s.alphas_cumprod)
    assert s.alpha_bar(torch.tensor([-1, 0])).tolist() == [1.0, float(s.alphas_cumprod[0])]


def test_epsilon_prediction_is_refused_where_the_schedule_ends_at_zero_snr():
    from difflab.schedules import check_epsilon_prediction, shifted_schedule

    cosine = make_schedule("cosine")  # alpha-bar_T ~ 2e-9
    with pytest.raises(ValueError, match=r"cosine schedule.*v_prediction"):
        check_epsilon_prediction(cosine, clip_sample=False)
    with pytest.raises(ValueError, match="cosine-shift4"):
        check_epsilon_prediction(shifted_schedule(cosine, 4.0), clip_sample=False)
    # what stays allowed: clipped x0 (Nichol & Dhariwal's pixel models), v-prediction, and the
    # schedules whose last alpha-bar keeps x0 within 1000x of the epsilon error
    check_epsilon_prediction(cosine, clip_sample=True)
    check_epsilon_prediction(make_schedule("cosine", prediction_type="v_prediction"), False)
    scaled = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    check_epsilon_prediction(scaled, clip_sample=False)
    check_epsilon_prediction(shifted_schedule(make_schedule("linear"), 4.0), clip_sample=False)
