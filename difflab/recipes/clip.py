"""Recipe: shapes-clip, a contrastive text-image model of the shapes world (``kind = "clip"``).

CLIP (Radford et al. 2021) at shapes-world scale: a small CNN image tower and a trainable head on
the frozen MiniLM text encoder (:class:`~difflab.models.clip.ShapesCLIP`) are trained with the
symmetric InfoNCE loss of CLIP's Fig. 3 on ``dataset_length`` shapes renders and their captions
(:class:`~difflab.data.shapes.ShapesDataset`, train split). Every distinct caption is encoded by
the frozen encoder once, before training; the encoder never runs inside the loop.

Duplicate captions are real in this world ("a circle" is drawn for many scenes): identical
captions in a batch become one text whose positives are all the images it describes
(:func:`~difflab.models.clip.clip_loss` with :func:`~difflab.models.clip.caption_groups`), so a
frequent caption is not counted several times as a negative, nor its positive capped at 1/n.

With ``noise_aware = true`` (the shipped recipe) a ``noisy_fraction`` of each batch is noised to
``x_t = alpha x_0 + sigma eps`` at a log-SNR drawn uniformly from ``[log_snr_min,
log_snr_max]`` (covering the linear DDPM schedule's -10.1..9.2) and the rest stays clean, so one
model serves both CLIP guidance of noisy samples (GLIDE, Nichol et al. 2022, Sec. 2.4) and
CLIP scores of clean images.

``results.json``: zero-shot attribute accuracy on single-object validation scenes (clean, and
for a noise-aware model at log-SNR 5, 0 and -5), image<->caption top-1 retrieval within groups of
``retrieval_group`` validation scenes, the parameter count and the training time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from difflab.data.shapes import ShapesDataset
from difflab.eval.clip_score import (
    retrieval_accuracy,
    zero_shot_attributes,
    zero_shot_prompt_embeddings,
)
from difflab.models.clip import (
    CLIPConfig,
    ShapesCLIP,
    caption_groups,
    clip_loss,
    noise_images,
    pooled_text_features,
    save_clip_model,
    shared_prompt_encoder,
)
from difflab.models.networks import parameter_count
from difflab.train import TrainConfig, seeded_weights, train

NOISY_EVAL_LOG_SNRS = (5.0, 0.0, -5.0)


@dataclass
class CLIPRecipe:
    """Options of the ``clip`` recipe (the model's are those of :class:`CLIPConfig`)."""

    image_size: int = 32
    channels: tuple = (32, 64, 128)  # image tower: one block each
    layers_per_block: int = 2
    norm_groups: int = 8
    grid: int = 4  # last feature map pooled to grid x grid before the projection
    embed_dim: int = 128
    text_hidden: int = 256
    noise_aware: bool = True
    noisy_fraction: float = 0.5  # share of each batch noised (noise_aware only)
    log_snr_min: float = -10.0
    log_snr_max: float = 10.0
    dataset_length: int = 30_000  # training scenes (one caption each, encoded once)
    validation_length: int = 1_024  # validation scenes for retrieval
    retrieval_group: int = 64  # retrieval among this many validation captions (chance 1/64)
    zero_shot_images: int = 1_000  # single-object validation scenes for zero-shot accuracy


def contrastive_objective(options: CLIPRecipe):
    """``objective(model, batch, generator)``: noise part of the batch (noise-aware models) and
    return the symmetric InfoNCE loss with identical captions merged (see clip_loss)."""

    def objective(model, batch, generator):
        images, log_snr = batch["image"], None
        if options.noise_aware:
            images, log_snr = noise_images(
                images, generator, options.noisy_fraction, options.log_snr_min,
                options.log_snr_max,
            )  # fmt: skip
        image_embeddings, text_embeddings, scale = model(images, batch["text_embedding"], log_snr)
        return clip_loss(image_embeddings, text_embeddings, scale, caption_groups(batch["caption"]))

    return objective


class KeptRenders(Dataset):
    """``data``'s items, each kept in memory after its first use with its image in float16 (also
    on first use, so every epoch sees the same values): later epochs skip drawing the scene and
    rendering it, which otherwise costs about a third of a training step on a CPU. 30,000 32-px
    items take about 0.2 GB. (With ``num_workers > 0`` each worker keeps its own copy for one
    epoch only: keep ``num_workers = 0``.)"""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.kept: list[dict | None] = [None] * len(data)

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int) -> dict:
        if self.kept[index] is None:
            item = self.data[index]
            self.kept[index] = {**item, "image": item["image"].half()}
        item = self.kept[index]
        return {**item, "image": item["image"].float()}


def captioned_scenes(options: CLIPRecipe, seed: int, prompt_encoder) -> ShapesDataset:
    """The training set: renders with their caption and its pooled frozen-encoder features
    (``"text_embedding"``), every distinct caption encoded once (with a progress bar)."""
    bar = tqdm(desc="encoding captions", unit="caption", leave=False)

    def embed(prompts: list[str]) -> torch.Tensor:
        features = pooled_text_features(prompt_encoder, prompts, warn=False)
        bar.update(len(prompts))
        return features

    with bar:
        return ShapesDataset(
            length=options.dataset_length, size=options.image_size, split="train", seed=seed,
            embed_fn=embed,
        )  # fmt: skip


def _model(options: CLIPRecipe, seed: int) -> ShapesCLIP:
    with seeded_weights(seed):  # initial weights from the run's seed
        return ShapesCLIP(
            CLIPConfig(
                image_size=options.image_size, channels=tuple(options.channels),
                layers_per_block=options.layers_per_block, norm_groups=options.norm_groups,
                grid=options.grid, embed_dim=options.embed_dim, text_hidden=options.text_hidden,
                noise_aware=options.noise_aware, log_snr_min=options.log_snr_min,
                log_snr_max=options.log_snr_max, name="shapes-clip",
            )
        )  # fmt: skip


def measure(model: ShapesCLIP, options: CLIPRecipe) -> dict:
    """Held-out figures: zero-shot accuracy (clean; and noisy for a noise-aware model) and
    retrieval on validation scenes (data seed 0)."""
    validation = ShapesDataset(options.validation_length, options.image_size, "validation", seed=0)
    items = [validation[i] for i in range(len(validation))]
    images = torch.stack([item["image"] for item in items])
    prompts = zero_shot_prompt_embeddings(model)
    figures = {
        "zero_shot": zero_shot_attributes(
            model, options.zero_shot_images, prompt_embeddings=prompts
        ),
        "retrieval": retrieval_accuracy(
            model, images, [item["caption"] for item in items], options.retrieval_group
        ),
    }
    if options.noise_aware:
        noisy = {
            level: zero_shot_attributes(
                model, options.zero_shot_images, log_snr=level, prompt_embeddings=prompts
            )
            for level in NOISY_EVAL_LOG_SNRS
        }
        figures["zero_shot_noisy"] = {
            str(level): {a: found[a] for a in ("shape", "colour", "size")}
            for level, found in noisy.items()
        }
    return figures


def run(options: CLIPRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool) -> dict:
    """Train, save the model to ``out/clip`` and return the measured figures."""
    if not 0 <= options.noisy_fraction <= 1:
        raise ValueError(f"noisy_fraction must be in [0, 1], got {options.noisy_fraction}")
    model = _model(options, config.seed)
    prompt_encoder = shared_prompt_encoder(model.config.text_max_length)
    data = captioned_scenes(options, config.seed, prompt_encoder)
    result = train(
        config, model, contrastive_objective(options), KeptRenders(data), out, resume=resume,
        overwrite=overwrite,
    )  # fmt: skip
    final = (result.ema_model or result.model).eval().requires_grad_(False)
    final.prompt_encoder = prompt_encoder
    save_clip_model(final, out / "clip")
    return {
        "parameters": parameter_count(final),  # stored, trainable: the frozen encoder is apart
        "text_encoder_parameters": parameter_count(prompt_encoder.text_encoder),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "training_captions": len(data.text_embeddings),
        "logit_scale": float(final.scale),
        **measure(final, options),
        "clip": str(out / "clip"),
    }
