"""Recipe: pixel-space diffusion (no autoencoder) — the class-conditional digits model and the
unconditional shapes model.

DDPM (Ho et al. 2020) on scikit-learn's real 8x8 handwritten digits (upsampled to
``image_size``) or on shapes renders. Class-conditional training drops the label to the null
class with probability ``label_dropout`` so the network is also unconditional, as classifier-free
guidance requires (Ho & Salimans 2022, Algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.data.real import DIGIT_WORDS, digits_dataset
from difflab.data.shapes import ShapesDataset
from difflab.models.networks import parameter_count, pixel_unet
from difflab.pipelines.pixel import PixelPipeline
from difflab.schedules import check_epsilon_prediction, make_schedule
from difflab.train import TrainConfig, diffusion_objective, train
from difflab.train.records import save_image_grid

DATASETS = ("digits", "shapes")


@dataclass
class PixelRecipe:
    """Options of the ``pixel`` recipe."""

    dataset: str = "digits"  # "digits" (class-conditional) or "shapes" (unconditional)
    image_size: int = 16
    dataset_length: int = 20_000  # shapes only; digits uses all 1,797 images (its train split)
    block_out_channels: tuple = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    schedule: str = "linear"
    prediction_type: str = "epsilon"
    weighting: str = "min_snr"
    label_dropout: float = 0.1
    sample_steps: int = 50
    sample_guidance: float = 2.0
    # the folder's default: clip the implied x0 to [-1, 1] at every sampling step (DDPM's
    # sampler; diffusers' clip_sample), without which briefly trained pixel models saturate
    clip_sample: bool = True


def with_label_dropout(objective, null_class: int, probability: float):
    """Map the batch's ``label`` to ``class_labels``, dropping it to ``null_class`` with
    ``probability`` (drawn from the Trainer's generator)."""

    def dropped(model, batch, generator):
        labels = batch["label"].clone()
        drop = torch.rand(labels.shape[0], generator=generator) < probability
        labels[drop.to(labels.device)] = null_class
        return objective(model, {"image": batch["image"], "class_labels": labels}, generator)

    return dropped


def run(
    options: PixelRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train and save the pipeline to ``out/pipeline``."""
    if options.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {options.dataset!r}; use one of {', '.join(DATASETS)}.")
    conditional = options.dataset == "digits"
    if conditional:
        data = digits_dataset(options.image_size, "train", seed=config.seed)
        channels, class_names = 1, list(DIGIT_WORDS)
    else:
        data = ShapesDataset(
            length=options.dataset_length, size=options.image_size, seed=config.seed
        )
        channels, class_names = 3, []
    schedule = make_schedule(options.schedule, prediction_type=options.prediction_type)
    check_epsilon_prediction(schedule, clip_sample=options.clip_sample)
    unet = pixel_unet(
        sample_size=options.image_size,
        in_channels=channels,
        block_out_channels=options.block_out_channels,
        layers_per_block=options.layers_per_block,
        num_class_embeds=len(class_names) + 1 if conditional else None,
        norm_num_groups=options.norm_num_groups,
    )
    objective = diffusion_objective(
        schedule, weighting=options.weighting, cond_key="class_labels" if conditional else None
    )
    if conditional:
        objective = with_label_dropout(objective, len(class_names), options.label_dropout)
    else:
        objective = _images_only(objective)

    def pipeline_of(model) -> PixelPipeline:
        return PixelPipeline(
            model, schedule, class_names, name=out.name, clip_sample=options.clip_sample
        )

    def sample_fn(model, step, out_dir):
        pipeline = pipeline_of(model)
        labels = [i % 10 for i in range(20)] if conditional else 20
        images = pipeline.sample(
            labels, options.sample_steps, options.sample_guidance if conditional else 1.0
        )
        save_image_grid(images, Path(out_dir) / "samples" / f"step_{step:08d}.png", nrow=10)

    result = train(
        config, unet, objective, data, out, sample_fn=sample_fn, resume=resume, overwrite=overwrite
    )
    final = (result.ema_model or result.model).eval()
    pipeline_of(final).save_pretrained(out / "pipeline")
    return {
        "parameters": parameter_count(final),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "pipeline": str(out / "pipeline"),
    }


def _images_only(objective):
    """Pass only the images of a dict batch to an unconditional objective."""

    def images(model, batch, generator):
        return objective(model, batch["image"], generator)

    return images
