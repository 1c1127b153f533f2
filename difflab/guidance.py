"""Guidance as wrappers around a denoiser: each function takes a model callable and returns a
new ``model(x_t, t) -> prediction`` that any sampler in :mod:`difflab.samplers` can drive.

- :func:`classifier_free_guidance` (Ho & Salimans 2022, Eq. 6), one batched call for both
  branches, with optional guidance rescale (Lin et al. 2024, Eq. 15-16) and an optional
  guidance interval (Kynkaanniemi et al. 2024) outside which the conditional model runs alone;
  :func:`conditioned` is it when the weight is not 1, else the conditional model alone;
- :func:`gradient_guidance` — classifier guidance (Dhariwal & Nichol 2021, Sec. 4.2, Eq. 14)
  and any other differentiable score of x_t (CLIP guidance), plus :func:`log_prob_gradient`;
- :func:`thresholded` with :func:`static_threshold` and :func:`dynamic_threshold`
  (Saharia et al. 2022, Sec. 2.3): clip the implied x0 and re-derive the prediction.

The log-probabilities that classifier and CLIP guidance follow come from networks that judge
noisy images, told each image's log-SNR: :func:`classifier_log_prob` (a noise-aware
:class:`~difflab.models.feature_nets.FeatureNet`'s heads, Dhariwal & Nichol 2021) and
:func:`clip_log_prob` (a noise-aware shapes-clip, GLIDE, Nichol et al. 2022, Sec. 2.4).
A :data:`Guide` (``guide(model, schedule) -> model``) is what pipelines accept as ``guide=``:
:func:`classifier_guide`, :func:`clip_guide`, :func:`threshold_guide`, :func:`chain_guides`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from difflab.schedules import NoiseSchedule, predicted_x0_and_eps, prediction_from_x0_and_eps

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _concat(uncond: Any, cond: Any) -> Any:
    """Stack unconditional and conditional inputs along the batch (tensors or dicts of them)."""
    if isinstance(cond, dict):
        if not isinstance(uncond, dict) or set(uncond) != set(cond):
            raise ValueError("cond and uncond must be dicts with the same keys.")
        return {key: _concat(uncond[key], cond[key]) for key in cond}
    if cond is None:
        return None
    return torch.cat([uncond, cond])


def classifier_free_guidance(
    model: Callable[..., torch.Tensor],
    cond: Any,
    uncond: Any,
    scale: float | torch.Tensor,
    *,
    rescale: float = 0.0,
    interval: Sequence[int] | str | None = None,
) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6):
    pred = pred(x, uncond) + w (pred(x, cond) - pred(x, uncond)).

    Both branches run in one batched call ``model(cat[x, x], cat[t, t], cat[uncond, cond])``;
    ``cond``/``uncond`` are tensors or dicts of tensors with the batch first (a dict is passed to
    the model as keyword arguments). ``scale = 1`` is the plain conditional model, ``0`` the
    unconditional one; a tensor broadcasting against x (e.g. [B, 1, 1, 1]) gives each sample its
    own weight (guidance distillation draws one per sample). ``rescale`` = phi of Lin et al.
    2024 (Eq. 15-16): the guided prediction is rescaled to the per-sample standard deviation of
    the conditional one and mixed back with weight phi, which counters over-exposure at high
    ``scale``. As in diffusers, it acts on the model's own prediction (the paper states it for
    v-prediction).

    ``interval = (t_low, t_high)``: guide only at timesteps t_low <= t <= t_high and run the
    conditional model alone elsewhere - "applying guidance in a limited interval" (Kynkaanniemi
    et al. 2024, NeurIPS), who find guidance at high noise harmful (it collapses samples toward
    few, simple modes) and useless at low noise. A step whose whole batch lies outside the
    interval costs one network call on the batch instead of two.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must lie in [0, 1], got {rescale}.")
    low, high = check_guidance_interval(interval)
    # None / "all" guide at every step: no per-step test of t (on a GPU, no sync per step)
    limited = interval is not None and interval != EVERY_STEP
    both = _concat(uncond, cond)
    conditional = conditional_model(model, cond)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if limited:
            t_per_sample = torch.as_tensor(t).expand(x.shape[0])
            inside = (t_per_sample >= low) & (t_per_sample <= high)
            if not bool(inside.any()):
                return conditional(x, t)
        x2, t2 = torch.cat([x, x]), torch.cat([t, t])
        out = model(x2, t2, **both) if isinstance(both, dict) else model(x2, t2, both)
        pred_uncond, pred_cond = out.chunk(2)
        pred = pred_uncond + scale * (pred_cond - pred_uncond)
        if rescale > 0:
            dims = list(range(1, x.ndim))
            ratio = pred_cond.std(dim=dims, keepdim=True) / pred.std(dim=dims, keepdim=True)
            pred = rescale * pred * ratio + (1 - rescale) * pred
        if limited and not bool(inside.all()):  # samples at other timesteps: conditional alone
            pred = torch.where(inside.view(-1, *[1] * (x.ndim - 1)), pred, pred_cond)
        return pred

    return guided


EVERY_STEP = "all"
"""The guidance interval that holds every timestep (guidance at every step)."""


def check_guidance_interval(interval: Sequence[int] | str | None) -> tuple[float, float]:
    """``(t_low, t_high)`` of a guidance interval (see :func:`classifier_free_guidance`); None
    or :data:`EVERY_STEP` means every timestep. A clear error names what is wrong with any
    other value."""
    if interval is None or interval == EVERY_STEP:
        return -math.inf, math.inf
    is_pair = isinstance(interval, Sequence | torch.Tensor) and not isinstance(interval, str)
    values = list(interval) if is_pair else [interval]
    if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
        raise ValueError(
            f"a guidance interval is two timesteps (t_low, t_high), e.g. (0, 800), or "
            f"{EVERY_STEP!r}; got {interval!r}."
        )
    low, high = values
    if not 0 <= low <= high:
        raise ValueError(
            f"a guidance interval needs 0 <= t_low <= t_high, got ({low}, {high}); guidance "
            "runs at the timesteps between the two, both included."
        )
    return float(low), float(high)


def parse_guidance_interval(text: str | None) -> list[int] | str | None:
    """``"LOW,HIGH"`` (the command line's ``--guidance-interval``) as ``[LOW, HIGH]``, checked
    by :func:`check_guidance_interval`; ``"all"`` (:data:`EVERY_STEP`) and None (the model's
    default) stay as they are."""
    if text is None or text == EVERY_STEP:
        return text
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(
            f"--guidance-interval takes two timesteps as LOW,HIGH (e.g. 0,800: guidance only at "
            f"t <= 800) or {EVERY_STEP!r} (every step), got {text!r}."
        )
    interval = [int(part) for part in parts]
    check_guidance_interval(interval)
    return interval


def conditioned(
    model: Callable[..., torch.Tensor], cond: Any, uncond: Any, scale: float,
    interval: Sequence[int] | str | None = None,
) -> Model:  # fmt: skip
    """``model(x_t, t)`` conditioned on ``cond``: :func:`classifier_free_guidance` toward it
    (against ``uncond``, within ``interval``) when ``scale != 1``, else the conditional model
    alone, in one call per step. ``cond`` and ``uncond`` as for
    :func:`classifier_free_guidance`."""
    if scale != 1.0:
        return classifier_free_guidance(model, cond, uncond, scale, interval=interval)
    check_guidance_interval(interval)  # unused without guidance, but a bad value is still an error
    return conditional_model(model, cond)


def conditional_model(model: Callable[..., torch.Tensor], cond: Any) -> Model:
    """``model(x_t, t)`` on the condition ``cond`` alone (a tensor, or a dict of keyword
    arguments), without guidance."""

    def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, **cond) if isinstance(cond, dict) else model(x, t, cond)

    return conditional


def log_prob_gradient(
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Turn ``log_prob(x_t, t) -> [B]`` (e.g. a noise-aware classifier's log p(c | x_t)) into
    its gradient with respect to x_t, computed by autograd."""

    def gradient(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob(x_in, t).sum(), x_in)
        return grad

    return gradient


def gradient_guidance(
    model: Model,
    schedule: NoiseSchedule,
    gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scale: float = 1.0,
) -> Model:
    """Classifier guidance (Dhariwal & Nichol 2021, Eq. 14):
    eps-hat = eps - s sqrt(1 - abar_t) grad_x log p(c | x_t).

    ``gradient(x_t, t)`` returns grad_x log p(c | x_t) (see :func:`log_prob_gradient`). With
    ``s = 1`` and the exact gradient, the guided model is the exact conditional denoiser of
    p(x | c); ``s > 1`` sharpens toward the class. Works for every prediction type (the
    prediction is converted to eps and back).
    """

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prediction = model(x, t)
        alpha_bar = schedule.alpha_bar(t, like=x)
        x0, eps = predicted_x0_and_eps(prediction, x, alpha_bar, schedule.prediction_type)
        eps = eps - scale * (1 - alpha_bar).sqrt() * gradient(x, t).to(eps)
        x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        return prediction_from_x0_and_eps(x0, eps, alpha_bar, schedule.prediction_type)

    return guided


def static_threshold(x0: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Static thresholding: clip the x0 estimate to [-limit, limit] (Saharia et al. 2022, Sec. 2.3)."""
    return x0.clamp(-limit, limit)


def dynamic_threshold(
    x0: torch.Tensor, percentile: float = 0.995, max_value: float = float("inf")
) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = the ``percentile``
    quantile of |x0|, floored at 1 and optionally capped at ``max_value`` (diffusers'
    ``sample_max_value``); x0 is clipped to [-s, s] and divided by s, so samples that would
    saturate are pulled back inside [-1, 1] instead of being clipped flat."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile}.")
    flat = x0.flatten(1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0, max=max(max_value, 1.0))
    s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


def thresholded(
    model: Model,
    schedule: NoiseSchedule,
    threshold: Callable[[torch.Tensor], torch.Tensor] = dynamic_threshold,
) -> Model:
    """Wrap ``model`` so its implied x0 is passed through ``threshold`` at every call, and the
    prediction (and so the implied eps) is re-derived from the thresholded x0 and x_t."""

    def clipped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = schedule.alpha_bar(t, like=x)
        x0, _ = predicted_x0_and_eps(model(x, t), x, alpha_bar, schedule.prediction_type)
        x0 = threshold(x0)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return prediction_from_x0_and_eps(x0, eps, alpha_bar, schedule.prediction_type)

    return clipped


# ---- the networks classifier and CLIP guidance follow, and guides for pipelines ----

# A guide wraps a pipeline's denoiser: guide(model, schedule) -> guided model.
Guide = Callable[[Model, NoiseSchedule], Model]
THRESHOLDS = ("static", "dynamic")


def timestep_log_snr(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The log-SNR lambda_t = log(abar_t / (1 - abar_t)) [B] of integer timesteps ``t``, in
    ``like``'s dtype and device: the noise level noise-aware networks are told."""
    return schedule.log_snr[torch.as_tensor(t, dtype=torch.long).cpu()].to(like)


def _require_noise_aware(model: Any, what: str, recipe: str) -> None:
    """Refuse a network that only knows clean images: x_t is noisy at every step but the last
    (the lectures: "both classifier and CLIP must be noise-aware")."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "noise_aware", True) is False:
        name = getattr(config, "name", "") or type(model).__name__
        raise ValueError(
            f"{what} needs a noise-aware network, trained on noisy images x_t and told their "
            f"noise level; {name} only knows clean ones. Train one with noise_aware = true "
            f"({recipe})."
        )


def _is_pair(item: Any) -> bool:
    pair = isinstance(item, (tuple, list)) and len(item) == 2
    return pair and all(isinstance(v, str) for v in item)


def parse_targets(text: str, heads: Sequence) -> list[tuple[str, str]]:
    """``"colour=red,shape=circle"`` -> ``[("colour", "red"), ("shape", "circle")]``, checked
    against a classifier's heads (:class:`~difflab.models.feature_nets.Head`). A bare label
    (``"seven"``, ``"red"``) names the one head that has it."""
    by_name = {h.name: h for h in heads}
    listed = "; ".join(f"{h.name}: {', '.join(h.labels)}" for h in heads)
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            name, label = (v.strip() for v in part.split("=", 1))
        else:
            owners = [h.name for h in heads if part in h.labels]
            if len(owners) != 1:
                raise ValueError(
                    f"{part!r} is {'the label of several heads' if owners else 'no label'} of this "
                    f"classifier; write head=label. Heads and labels: {listed}"
                )
            name, label = owners[0], part
        if name not in by_name or label not in by_name[name].labels:
            raise ValueError(f"unknown target {part!r}; heads and labels: {listed}")
        pairs.append((name, label))
    if not pairs:
        raise ValueError(f"no target in {text!r}; write e.g. head=label,head=label ({listed})")
    return pairs


def _target_weights(heads: dict, per_sample: list, batch: int) -> dict[str, torch.Tensor]:
    """{head: [B, labels] 0/1}: which labels each sample is guided toward."""
    weights: dict[str, torch.Tensor] = {}
    for i, pairs in enumerate(per_sample):
        for name, label in pairs:
            if name not in heads or label not in heads[name].labels:
                raise ValueError(
                    f"unknown target {name}={label}; heads and labels: "
                    + "; ".join(f"{h.name}: {', '.join(h.labels)}" for h in heads.values())
                )
            w = weights.setdefault(name, torch.zeros(batch, len(heads[name].labels)))
            if heads[name].kind == "multiclass" and w[i].any():
                raise ValueError(f"head {name!r} is multi-class: guide toward one of its labels")
            w[i, heads[name].labels.index(label)] = 1.0
    return weights


def classifier_log_prob(
    classifier: torch.nn.Module, schedule: NoiseSchedule, targets: Sequence
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``log_prob(x_t, t) -> [B]``: log p(y | x_t) of a noise-aware classifier (a
    :class:`~difflab.models.feature_nets.FeatureNet` with ``noise_aware``), for Dhariwal & Nichol
    2021's classifier guidance (Sec. 4.1, Eq. 14 via :func:`gradient_guidance`).

    ``targets``: ``(head, label)`` pairs for every sample, or one list of pairs per sample. y is
    the conjunction of the pairs, each read as independent: log sigmoid(logit) for a multi-label
    head (the label is present), log softmax for a multi-class head (it is the class). The
    classifier is told each sample's log-SNR at timestep t (:func:`timestep_log_snr`)."""
    _require_noise_aware(classifier, "classifier guidance", "the features recipe")
    heads = {h.name: h for h in classifier.config.heads}
    shared = not targets or _is_pair(targets[0])
    if shared:
        _target_weights(heads, [list(targets)], 1)  # refuse bad targets now, not mid-sampling
    else:
        _target_weights(heads, [list(p) for p in targets], len(targets))
    cache: dict[int, dict[str, torch.Tensor]] = {}

    def log_prob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if not shared and len(targets) != batch:
            raise ValueError(f"got {len(targets)} per-sample targets for a batch of {batch}")
        if batch not in cache:
            per_sample = [list(targets)] * batch if shared else [list(p) for p in targets]
            cache[batch] = _target_weights(heads, per_sample, batch)
        logits = classifier.logits(x, log_snr=timestep_log_snr(schedule, t, x))
        total = x.new_zeros(batch)
        for name, wanted in cache[batch].items():
            if heads[name].kind == "multilabel":
                log_p = torch.nn.functional.logsigmoid(logits[name])
            else:
                log_p = logits[name].log_softmax(dim=1)
            total = total + (wanted.to(log_p) * log_p).sum(1)
        return total

    return log_prob


def clip_log_prob(
    clip: torch.nn.Module, schedule: NoiseSchedule, prompts: Sequence[str]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``log_prob(x_t, t) -> [B]``: the CLIP logit ``tau * cos(f(x_t, lambda_t), g(c))`` of a
    noise-aware :class:`~difflab.models.clip.ShapesCLIP` (one prompt for every sample, or one
    each), for CLIP guidance. GLIDE (Nichol et al. 2022, Sec. 2.4, Eq. 5) follows the gradient
    of the dot product f(x_t) . g(c); with unit embeddings that is this logit divided by the
    temperature tau, i.e. the same direction with the guidance scale multiplied by tau. Up to a
    constant, the logit is log p(c | x_t) under the contrastive model's softmax over captions."""
    _require_noise_aware(clip, "CLIP guidance", "the clip recipe")
    text = clip.encode_text(list(prompts), warn=False).detach()  # [P, D]

    def log_prob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if text.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"got {text.shape[0]} prompts for a batch of {x.shape[0]}")
        image = clip.encode_image(x, timestep_log_snr(schedule, t, x))
        return clip.scale.detach().to(image) * (image * text.to(image)).sum(1)

    return log_prob


def classifier_guide(classifier: torch.nn.Module, targets: Sequence, scale: float) -> Guide:
    """The :data:`Guide` of classifier guidance toward ``targets`` (see
    :func:`classifier_log_prob`) with scale s (Dhariwal & Nichol 2021, Alg. 2 / Eq. 14)."""

    def guide(model: Model, schedule: NoiseSchedule) -> Model:
        log_prob = classifier_log_prob(classifier, schedule, targets)
        return gradient_guidance(model, schedule, log_prob_gradient(log_prob), scale)

    return guide


def clip_guide(clip: torch.nn.Module, prompts: Sequence[str], scale: float) -> Guide:
    """The :data:`Guide` of CLIP guidance toward ``prompts`` (see :func:`clip_log_prob`)."""

    def guide(model: Model, schedule: NoiseSchedule) -> Model:
        log_prob = clip_log_prob(clip, schedule, prompts)
        return gradient_guidance(model, schedule, log_prob_gradient(log_prob), scale)

    return guide


def threshold_guide(kind: str = "dynamic", percentile: float = 0.995) -> Guide:
    """The :data:`Guide` that thresholds the implied x0 at every step (Saharia et al. 2022,
    Sec. 2.3): ``"static"`` clips it to [-1, 1]; ``"dynamic"`` divides by the ``percentile``
    quantile of |x0| where it exceeds 1. For pixel-space models (x0 in image range)."""
    if kind == "static":
        threshold = static_threshold
    elif kind == "dynamic":
        dynamic_threshold(torch.zeros(1, 1), percentile)  # refuse a bad percentile now
        threshold = functools.partial(dynamic_threshold, percentile=percentile)
    else:
        raise ValueError(f"unknown thresholding {kind!r}; use one of {', '.join(THRESHOLDS)}.")

    def guide(model: Model, schedule: NoiseSchedule) -> Model:
        return thresholded(model, schedule, threshold)

    return guide


def chain_guides(*guides: Guide | None) -> Guide | None:
    """One :data:`Guide` applying ``guides`` in order (None entries skipped; None if all are):
    ``chain_guides(classifier_guide(...), threshold_guide())`` thresholds the guided x0."""
    chosen = [g for g in guides if g is not None]
    if not chosen:
        return None

    def guide(model: Model, schedule: NoiseSchedule) -> Model:
        for g in chosen:
            model = g(model, schedule)
        return model

    return guide


def sampling_threshold(
    threshold: str | None, clip_sample: bool, percentile: float = 0.995
) -> Guide | None:
    """The thresholding :data:`Guide` a pixel-space pipeline applies (None for none), from a
    call's ``threshold`` and its folder's ``clip_sample``: ``None`` means the folder's default
    (static clipping when ``clip_sample``, as DDPM's sampler clips x0 to [-1, 1] - diffusers'
    ``clip_sample`` scheduler flag), ``"none"`` or ``""`` turns it off, ``"static"`` /
    ``"dynamic"`` choose it (:func:`threshold_guide`)."""
    kind = resolved_threshold(threshold, clip_sample)
    return threshold_guide(kind, percentile) if kind else None


def resolved_threshold(threshold: str | None, clip_sample: bool) -> str:
    """``"static"``, ``"dynamic"`` or ``""`` (none): what :func:`sampling_threshold` runs."""
    if threshold is None:
        return "static" if clip_sample else ""
    if threshold in ("", "none"):
        return ""
    if threshold not in THRESHOLDS:
        raise ValueError(
            f"unknown thresholding {threshold!r}; use one of {', '.join(THRESHOLDS)} or none."
        )
    return threshold
