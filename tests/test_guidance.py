"""Guidance wrappers, checked against their definitions and the exact mixture oracle."""

import numpy as np
import pytest
import torch

from difflab import samplers
from difflab.guidance import (
    check_guidance_interval,
    classifier_free_guidance,
    dynamic_threshold,
    gradient_guidance,
    log_prob_gradient,
    parse_guidance_interval,
    static_threshold,
    thresholded,
)
from difflab.oracle import GaussianMixture, example_mixture, fit_statistics
from difflab.schedules import make_schedule, predicted_x0_and_eps

SCHEDULE = make_schedule("linear", 1000)


def overlapping_mixture():
    """Two overlapping 2-D components, so p(c | x) is soft and guidance has room to sharpen."""
    return GaussianMixture(
        torch.tensor([0.5, 0.5], dtype=torch.float64),
        torch.tensor([[-0.4, 0.0], [0.4, 0.0]], dtype=torch.float64),
        torch.tensor([[[0.09, 0.0], [0.0, 0.09]]] * 2, dtype=torch.float64),
    )


def conditional_model(mixture, schedule):
    """model(x, t, c): the exact denoiser of component c, or of the whole mixture for c = -1."""
    unconditional = mixture.denoiser(schedule)
    per_class = [mixture.component(k).denoiser(schedule) for k in range(mixture.num_components)]

    def model(x, t, c):
        out = unconditional(x, t)
        for k, denoiser in enumerate(per_class):
            chosen = c == k
            if chosen.any():
                out[chosen] = denoiser(x[chosen], t[chosen])
        return out

    return model


def test_cfg_is_one_batched_call_with_the_guidance_formula():
    calls = []

    def model(x, t, c):
        calls.append(x.shape[0])
        return x * (1 + c[:, None]) + t[:, None] * 0.01

    x = torch.randn(4, 2)
    t = torch.full((4,), 7)
    cond, uncond = torch.full((4,), 2.0), torch.zeros(4)
    guided = classifier_free_guidance(model, cond, uncond, 3.0)(x, t)
    assert calls == [8]
    expected = model(x, t, uncond) + 3.0 * (model(x, t, cond) - model(x, t, uncond))
    assert torch.allclose(guided, expected)


def test_cfg_passes_dict_conditioning_as_keywords():
    def model(x, t, context, scale):
        return x * context[:, None] * scale[:, None]

    x, t = torch.ones(3, 2), torch.zeros(3, dtype=torch.long)
    cond = {"context": torch.full((3,), 2.0), "scale": torch.ones(3)}
    uncond = {"context": torch.zeros(3), "scale": torch.ones(3)}
    assert torch.allclose(classifier_free_guidance(model, cond, uncond, 1.0)(x, t), 2 * x)
    with pytest.raises(ValueError, match="same keys"):
        classifier_free_guidance(model, cond, {"context": torch.zeros(3)}, 1.0)


def _guided_samples(scale, n=4000, target=1, rescale=0.0):
    mixture = overlapping_mixture()
    model = classifier_free_guidance(
        conditional_model(mixture, SCHEDULE),
        torch.full((n,), target),
        torch.full((n,), -1),
        scale,
        rescale=rescale,
    )
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return mixture, samplers.dpmpp_2m(model, SCHEDULE, x_T, 50)


def test_cfg_scale_one_samples_the_conditional_and_zero_the_marginal():
    mixture, x = _guided_samples(1.0)
    fit = fit_statistics(mixture.component(1), x)
    assert fit.max_abs_z < 5 and fit.chi2 < 3, fit
    # w = 0: the marginal. Its components overlap, so compare the overall mean and covariance
    # (a moment-matched single Gaussian; the Gaussian standard errors are conservative here,
    # the mixture being lighter-tailed along the axis that separates its components).
    mixture, x = _guided_samples(0.0)
    mean = (mixture.weights[:, None] * mixture.means).sum(0)
    second = (
        mixture.weights[:, None, None]
        * (mixture.covariances + mixture.means[:, :, None] * mixture.means[:, None, :])
    ).sum(0)
    moments = GaussianMixture(
        torch.ones(1, dtype=torch.float64), mean[None], (second - mean[:, None] * mean[None])[None]
    )
    fit = fit_statistics(moments, x)
    assert fit.max_abs_z < 5 and fit.chi2 < 3, fit


def test_cfg_sharpens_toward_the_condition_as_theory_predicts():
    """Guidance with weight w follows the score of p(x) p(c | x)^w (Ho & Salimans 2022, Sec. 3):
    the mean log p(c | x0) of the samples must rise monotonically with w, from its marginal
    value at w = 0 through the exact conditional's value at w = 1, and the samples contract
    (smaller spread) as w grows past 1."""
    mixture = overlapping_mixture()
    ones = torch.ones(4000, dtype=torch.float64)
    exact, _ = mixture.component(1).sample(4000, torch.Generator().manual_seed(3))
    exact_value = mixture.log_posterior(exact, ones)[:, 1].mean()
    values, spreads = [], []
    for w in (0.0, 1.0, 3.0, 7.0):
        _, x = _guided_samples(w)
        values.append(float(mixture.log_posterior(x, ones)[:, 1].mean()))
        spreads.append(float(x[:, 0].std()))
    assert values == sorted(values) and values[0] < values[1] < values[2] < values[3], values
    assert abs(values[1] - float(exact_value)) < 0.03, (values[1], float(exact_value))
    assert spreads[3] < spreads[2] < spreads[1], spreads


def test_cfg_rescale_matches_its_definition():
    def model(x, t, c):
        return x * c[:, None]

    x, t = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    cond, uncond = torch.full((5,), 2.0), torch.full((5,), 0.5)
    plain = classifier_free_guidance(model, cond, uncond, 4.0)(x, t)
    full = classifier_free_guidance(model, cond, uncond, 4.0, rescale=1.0)(x, t)
    half = classifier_free_guidance(model, cond, uncond, 4.0, rescale=0.5)(x, t)
    assert torch.allclose(full.std(dim=1), (2 * x).std(dim=1))
    assert torch.allclose(half, 0.5 * full + 0.5 * plain)
    with pytest.raises(ValueError, match="rescale"):
        classifier_free_guidance(model, cond, uncond, 4.0, rescale=2.0)


def test_guidance_interval_guides_inside_and_runs_the_conditional_model_alone_outside():
    """Kynkaanniemi et al. 2024: guided prediction at t_low <= t <= t_high (both included),
    the conditional one elsewhere - per sample when a batch mixes timesteps - and one network
    call on the batch alone (not on the doubled batch) when no sample needs guidance."""
    batches = []

    def model(x, t, c):
        batches.append(x.shape[0])
        return x * c[:, None] + t[:, None].float()

    x = torch.randn(4, 3)
    cond, uncond = torch.full((4,), 2.0), torch.full((4,), 0.5)
    t = torch.tensor([100, 600, 601, 99])
    guided = classifier_free_guidance(model, cond, uncond, 4.0, interval=(100, 600))(x, t)
    conditional = 2 * x + t[:, None].float()
    full = (0.5 + 4.0 * 1.5) * x + t[:, None].float()  # u + w (c - u)
    inside = torch.tensor([True, True, False, False])
    assert torch.allclose(guided[inside], full[inside])
    assert torch.equal(guided[~inside], conditional[~inside])
    assert batches == [8]
    outside = classifier_free_guidance(model, cond, uncond, 4.0, interval=(0, 50))
    assert torch.equal(outside(x, torch.full((4,), 700)), 2 * x + 700.0)
    assert batches == [8, 4]
    # an interval holding every timestep is plain classifier-free guidance, bit for bit
    plain = classifier_free_guidance(model, cond, uncond, 4.0)(x, t)
    assert torch.equal(
        classifier_free_guidance(model, cond, uncond, 4.0, interval=(0, 999))(x, t), plain
    )


def test_guidance_interval_bad_input_names_the_fix():
    every = (-float("inf"), float("inf"))
    assert check_guidance_interval(None) == every and check_guidance_interval("all") == every
    assert parse_guidance_interval("0, 600") == [0, 600] and parse_guidance_interval(None) is None
    assert parse_guidance_interval("all") == "all"
    for bad, message in [((600, 0), "0 <= t_low <= t_high"), ((-1, 5), "0 <= t_low"),
                         ((1, 2, 3), "two timesteps"), (600, "two timesteps"),
                         ("every", "two timesteps")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            check_guidance_interval(bad)
    for bad in ("600", "0-600", "a,b", "0,600,900"):
        with pytest.raises(ValueError, match="LOW,HIGH"):
            parse_guidance_interval(bad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_classifier_guidance_with_exact_gradient_samples_the_conditional(prediction_type):
    """eps - sqrt(1 - abar) grad log p(c | x_t) is the exact conditional denoiser
    (Dhariwal & Nichol 2021, Eq. 14), so sampling it must reproduce component c alone."""
    schedule = make_schedule("linear", 1000, prediction_type=prediction_type)
    mixture = example_mixture(2)
    target = 2  # the lightest component (weight 0.2)

    def log_p_class(x, t):
        return mixture.log_posterior(x, schedule.alpha_bar(t))[:, target]

    guided = gradient_guidance(mixture.denoiser(schedule), schedule, log_prob_gradient(log_p_class))
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = samplers.heun(guided, schedule, x_T, 50)
    fit = fit_statistics(mixture.component(target), x)
    assert fit.max_abs_z < 5 and fit.chi2 < 3, fit


def test_static_threshold_clips():
    x0 = torch.tensor([[-3.0, -0.5, 0.2, 1.7]])
    assert torch.equal(static_threshold(x0), torch.tensor([[-1.0, -0.5, 0.2, 1.0]]))


def test_dynamic_threshold_matches_its_definition():
    x0 = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [0.2, 0.5, 1.0, 2.0, 3.0, 5.0]
    ).reshape(-1, 1, 1, 1)
    out = dynamic_threshold(x0, percentile=0.9)
    for i in range(6):
        values = x0[i].numpy()
        s = max(np.quantile(np.abs(values), 0.9), 1.0)  # Saharia et al. 2022, Sec. 2.3
        assert np.allclose(out[i].numpy(), np.clip(values, -s, s) / s, atol=1e-6)
        assert out[i].abs().max() <= 1.0 + 1e-6
    assert torch.equal(out[0], x0[0])  # inside [-1, 1]: untouched
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(x0, percentile=1.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_thresholded_model_keeps_x0_in_range(prediction_type):
    schedule = make_schedule("linear", 1000, prediction_type=prediction_type)

    def wild(x, t):  # implies x0 far outside [-1, 1]
        return 4 * torch.sin(x * 3) + x

    model = thresholded(wild, schedule, static_threshold)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) * 2
    t = torch.full((16,), 400)
    x0, _ = predicted_x0_and_eps(model(x, t), x, schedule.alpha_bar(t, like=x), prediction_type)
    assert x0.abs().max() <= 1 + 1e-5
    raw_x0, _ = predicted_x0_and_eps(wild(x, t), x, schedule.alpha_bar(t, like=x), prediction_type)
    inside = raw_x0.abs() < 1
    assert torch.allclose(x0[inside], raw_x0[inside], atol=1e-5)
