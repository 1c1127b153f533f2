"""Recipe: a text-conditional super-resolution diffusion model, one stage of a cascade
(``kind = "super_resolution"``; Ho et al. 2022, Cascaded Diffusion Models; Imagen, Saharia et al.
2022, Sec. 2.5).

Training pairs are shapes renders at ``image_size`` with their captions (the text-to-image
recipe's cached, encoded pixel dataset) and the same images area-downsampled to
``low_res_size``. Every example's low-resolution conditioning is corrupted by noise-conditioning
augmentation at a level s drawn uniformly from ``0..max_aug_timestep`` (timesteps of the model's
own schedule), and s is the model's second input (:mod:`difflab.pipelines.cascade`). Captions
are dropped with ``caption_dropout`` for classifier-free guidance, as in the base model.

With ``base`` (a pixel text-to-image folder making ``low_res_size`` images, or a cascade folder
ending there) the run also writes ``out/cascade``: base + earlier stages + this one.
``results.json`` adds the SR model's PSNR on validation renders (its low-res inputs augmented at
``aug_timestep``, the sampling level stored in the folder) next to bilinear upsampling's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.data.shapes import ShapesDataset
from difflab.diffusion import training_loss
from difflab.models.networks import parameter_count
from difflab.models.text_encoder import PromptEncoder
from difflab.pipelines.cascade import (
    CascadePipeline,
    SuperResolutionPipeline,
    augmented_condition,
    downsample,
    super_resolution_call,
    upsample,
)
from difflab.recipes.text_to_image import (
    TextToImageRecipe,
    cached_encode_dataset,
    latent_denoiser,
    recipe_schedule,
    with_caption_dropout,
)
from difflab.schedules import check_epsilon_prediction
from difflab.train import TrainConfig, train
from difflab.train.records import save_image_grid

SAMPLE_IMAGES = 8


@dataclass
class SuperResolutionRecipe(TextToImageRecipe):
    """Options of the ``super_resolution`` recipe: the text-to-image recipe's U-Net and schedule
    options (pixel space: ``vae`` must stay ``""``) plus these."""

    vae: str = ""
    low_res_size: int = 16
    max_aug_timestep: int = 500  # training: augmentation level s ~ U{0..max_aug_timestep}
    aug_timestep: int = 100  # sampling: the fixed level stored in the folder
    base: str = ""  # the model making the low-res images; with it, also write out/cascade
    validation_images: int = 64  # for the PSNR figure
    sample_guidance: float = 3.0


def super_resolution_objective(
    schedule, low_res_size: int, max_aug_timestep: int, weighting: str = "uniform"
):
    """``objective(model, batch, generator)``: the DDPM loss (Ho et al. 2020, Alg. 1) of the SR
    model on ``batch["image"]`` given its text states and its low-resolution version, augmented
    to a level drawn per example (Ho et al. 2022, Sec. 3.2). Draws, in order: the levels, the
    augmentation noise, then the loss's timesteps and noise - all from ``generator``."""

    def objective(model, batch, generator):
        images = batch["image"]
        low = downsample(images, low_res_size)
        levels = torch.randint(0, max_aug_timestep + 1, (images.shape[0],), generator=generator)
        noise = torch.randn(low.shape, generator=generator, dtype=low.dtype).to(low.device)
        condition = augmented_condition(low, images.shape[-1], levels, schedule, noise)

        def denoiser(x_t, t, encoder_hidden_states):
            return super_resolution_call(
                model, x_t, t, condition, levels, encoder_hidden_states=encoder_hidden_states
            )

        return training_loss(
            denoiser, schedule, images, generator=generator, weighting=weighting,
            encoder_hidden_states=batch["encoder_hidden_states"],
        )  # fmt: skip

    return objective


def _validation(options: SuperResolutionRecipe, count: int) -> tuple[torch.Tensor, list[str]]:
    data = ShapesDataset(length=count, size=options.image_size, split="validation", seed=0)
    items = [data[i] for i in range(count)]
    return torch.stack([item["image"] for item in items]), [item["caption"] for item in items]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().clamp(min=1e-12)
    return float(10 * torch.log10(4.0 / mse))


def _check(options: SuperResolutionRecipe, schedule) -> None:
    if options.vae:
        raise ValueError('a super-resolution model works in pixel space: set vae = "".')
    if not 0 < options.low_res_size < options.image_size:
        raise ValueError(
            f"need 0 < low_res_size < image_size, got {options.low_res_size} and "
            f"{options.image_size}"
        )
    T = schedule.num_train_timesteps
    for name in ("max_aug_timestep", "aug_timestep"):
        if not 0 <= getattr(options, name) < T:
            raise ValueError(f"{name} is a timestep of the model's schedule: in [0, {T - 1}]")


def run(
    options: SuperResolutionRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train the SR model; save it to ``out/pipeline`` (and the cascade to ``out/cascade``)."""
    schedule = recipe_schedule(options)
    _check(options, schedule)
    check_epsilon_prediction(schedule, clip_sample=options.clip_sample)
    base = None
    if options.base:
        from difflab.zoo import load_pipeline

        base = load_pipeline(options.base)  # fail before training, not after
        pixel = isinstance(base, CascadePipeline) or getattr(base, "vae", 1) is None
        size = base.size if isinstance(base, CascadePipeline) else base.latent_shape[-1]
        if not pixel or size != options.low_res_size:
            raise ValueError(
                f"base {options.base!r} must be a pixel-space text-to-image model or a cascade "
                f"making {options.low_res_size}-px images (low_res_size)"
            )
    prompt_encoder = PromptEncoder.from_pretrained()
    unet = latent_denoiser(
        options, options.image_size, 6, out_channels=3, class_embed_type="timestep"
    )
    data = cached_encode_dataset(
        ShapesDataset(length=options.dataset_length, size=options.image_size, seed=config.seed),
        None, None, prompt_encoder,
    )  # fmt: skip
    empty = prompt_encoder([""], warn=False)[0]
    objective = with_caption_dropout(
        super_resolution_objective(
            schedule, options.low_res_size, options.max_aug_timestep, options.weighting
        ),
        empty,
        options.caption_dropout,
    )

    def pipeline_of(model) -> SuperResolutionPipeline:
        return SuperResolutionPipeline(
            model, prompt_encoder, schedule, options.low_res_size, options.aug_timestep,
            name=out.name, clip_sample=options.clip_sample,
        )  # fmt: skip

    truth, captions = _validation(options, SAMPLE_IMAGES)
    low = downsample(truth, options.low_res_size)

    def sample_fn(model, step: int, out_dir: Path) -> None:
        """Rows: bilinear upsampling of the low-res input, the SR model's output, the truth."""
        made = pipeline_of(model).upsample(
            captions, low, options.sample_steps, options.sample_guidance, seed=0
        )
        rows = torch.cat([upsample(low, options.image_size), made.clamp(-1, 1), truth])
        save_image_grid(rows, Path(out_dir) / "samples" / f"step_{step:08d}.png", nrow=len(low))

    result = train(
        config, unet, objective, data, out, sample_fn=sample_fn, resume=resume, overwrite=overwrite
    )
    final = (result.ema_model or result.model).eval()
    pipeline = pipeline_of(final)
    pipeline.save_pretrained(out / "pipeline")
    truth, captions = _validation(options, options.validation_images)
    low = downsample(truth, options.low_res_size)
    made = pipeline.upsample(captions, low, options.sample_steps, options.sample_guidance, seed=0)
    figures = {
        "parameters": parameter_count(final),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "validation_psnr_db": psnr(made.clamp(-1, 1), truth),
        "bilinear_psnr_db": psnr(upsample(low, options.image_size).clamp(-1, 1), truth),
        "pipeline": str(out / "pipeline"),
    }
    if base is not None:
        CascadePipeline.extended(base, pipeline, name="cascade").save_pretrained(out / "cascade")
        figures["cascade"] = str(out / "cascade")
    return figures
