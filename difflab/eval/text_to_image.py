"""One call that measures a text-to-image model at one sampler setting: prompt fidelity
(ShapesEval), distribution quality (FID on a shapes feature network), realism and coverage
(improved precision/recall) and the wall time per image. The benchmarks that sweep samplers,
step counts and guidance weights call :func:`evaluate_text_to_image` once per cell.

Images are generated in batches of many prompts (one starting-noise generator per image, so the
deterministic samplers give each image independently of its batch) and scored in memory, as
``difflab eval shapes`` and ``difflab eval fid`` would score them from files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from difflab.eval.distribution import compute_metric, generate_for_eval, reference_images
from difflab.eval.features import extract_features
from difflab.eval.shapes import load_suite, score_images


@dataclass
class Reference:
    """Features of the real shapes images a model's samples are compared with (computed once
    per benchmark): validation scenes ``0..N-1``, whose captions prompt the model."""

    features: torch.Tensor
    network: torch.nn.Module
    name: str

    @classmethod
    def shapes(cls, count: int, size: int = 32, network: str = "shapes-features") -> Reference:
        from difflab.models.feature_nets import load_feature_network

        net = load_feature_network(network, resize=True)
        images, _ = reference_images("shapes", count, size, 3, progress=False)
        return cls(extract_features(net, images, 256, progress=False), net, network)


def suite_images(
    pipeline,
    suite: list[dict],
    images_per_prompt: int = 1,
    *,
    steps: int = 20,
    sampler: str = "dpmpp_2m",
    guidance: float = 5.0,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
    guidance_interval: list[int] | str | None = None,
) -> tuple[torch.Tensor, list[int], float]:
    """Images ``[N, 3, H, W]`` for every suite prompt (``images_per_prompt`` each, grouped by
    prompt), their prompt indices, and the sampling + decoding seconds. Image ``i`` starts from
    the noise of seed ``seed + i``. ``guidance_interval``: classifier-free guidance only at
    those timesteps (see :func:`difflab.guidance.classifier_free_guidance`)."""
    from difflab.pipelines.text_to_image import guidance_interval_keywords

    interval = guidance_interval_keywords(pipeline, guidance_interval)
    indices = [i for i in range(len(suite)) for _ in range(images_per_prompt)]
    images, seconds = [], 0.0
    for start in tqdm(range(0, len(indices), batch_size), desc="suite", disable=not progress):
        part = indices[start : start + batch_size]
        began = time.perf_counter()
        latents = pipeline.latents(
            [suite[i]["prompt"] for i in part], 1, steps=steps, guidance=guidance,
            sampler=sampler, seed=seed + start, **interval,
        )  # fmt: skip
        images.append(pipeline.decode(latents).float())
        seconds += time.perf_counter() - began
    return torch.cat(images), indices, seconds


def evaluate_text_to_image(
    pipeline,
    *,
    steps: int = 20,
    sampler: str = "dpmpp_2m",
    guidance: float = 5.0,
    suite: list[dict] | None = None,
    images_per_prompt: int = 1,
    reference: Reference | None = None,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> dict:
    """ShapesEval of the suite (default: the shipped one) and, with a ``reference``, FID and
    precision/recall (k = 3) of as many images prompted with the reference scenes' captions.

    Returns ``{"shapes": {"overall", "overall_stderr", "tasks": {task: score}}, "fid", "kid",
    "kid_std", "precision", "recall", "seconds_per_image", "num_images": {"shapes",
    "distribution"}}``.
    """
    suite = load_suite() if suite is None else suite
    images, indices, seconds = suite_images(
        pipeline, suite, images_per_prompt, steps=steps, sampler=sampler, guidance=guidance,
        seed=seed, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    shapes = score_images(images, indices, suite)
    report = {
        "shapes": {
            "overall": shapes["overall"],
            "overall_stderr": shapes["overall_stderr"],
            "tasks": {tag: task["score"] for tag, task in shapes["tasks"].items()},
        },
        "num_images": {"shapes": len(indices)},
        "seconds_per_image": seconds / len(indices),
    }
    if reference is not None:
        count = len(reference.features)
        began = time.perf_counter()
        fake, _ = generate_for_eval(
            pipeline, count, steps=steps, sampler=sampler, guidance=guidance, seed=seed,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
        seconds += time.perf_counter() - began
        features = extract_features(reference.network, fake, 256, progress=False)
        report["fid"] = compute_metric("fid", reference.features, features)[0]["fid"]
        # KID is unbiased at any set size (FID is biased upward at small ones), so small sweeps
        # can still be compared with it.
        report.update(compute_metric("kid", reference.features, features)[0])
        report.update(compute_metric("prd", reference.features, features)[0])
        report["num_images"]["distribution"] = count
        report["seconds_per_image"] = seconds / (len(indices) + count)
    return report
