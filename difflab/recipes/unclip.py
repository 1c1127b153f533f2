"""Recipes: unCLIP's decoder and diffusion prior on shapes-clip (DALL-E 2, Ramesh et al. 2022;
see :mod:`difflab.pipelines.unclip`). Train the decoder first, then the prior, which writes the
complete pipeline.

- ``kind = "unclip_decoder"``: the text-to-image recipe's U-Net (its options; pixel space with
  ``vae = ""`` or on a VAE's latents) conditioned on the frozen CLIP's image embedding of each
  training image instead of its caption. The embedding is dropped to zeros with
  ``caption_dropout`` (unCLIP sets the CLIP embedding to zero 10 % of the time, Sec. 2.1) for
  classifier-free guidance. Writes ``out/pipeline``: an unCLIP folder without a prior, which
  already makes variations and interpolations, and text-to-image from the text embedding.
  ``results.json``: CLIP-I between validation renders and their reconstructions (one decoding of
  each one's embedding).
- ``kind = "unclip_prior"``: a diffusion prior (Sec. 2.1; diffusers' ``PriorTransformer``)
  from the CLIP text embedding of each caption to the CLIP image embedding of its render,
  standardised per dimension, x0-prediction, the text dropped to the empty prompt's embedding
  with ``text_dropout``. Reads the decoder's folder and writes the complete pipeline to
  ``out/pipeline``. ``results.json``: on validation captions, the mean cosine between the
  image embedding and the prior's sample, against the cosine between it and the text
  embedding itself (CLIP's modality gap, which the prior is there to cross).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from difflab.data.shapes import ShapesDataset
from difflab.eval.clip_score import clip_i_score
from difflab.models.clip import load_clip_model
from difflab.models.networks import embedding_prior, parameter_count
from difflab.pipelines.unclip import UnCLIPPipeline
from difflab.recipes.text_to_image import (
    TextToImageRecipe,
    latent_denoiser,
    load_frozen_vae,
    recipe_schedule,
    with_caption_dropout,
)
from difflab.schedules import check_epsilon_prediction, make_schedule
from difflab.train import TrainConfig, diffusion_objective, seeded_weights, train
from difflab.train.records import save_image_grid

SAMPLE_IMAGES = 8


class TensorItems(Dataset):
    """Items ``{key: tensors[key][i]}`` of equally long tensors."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict:
        return {key: value[index] for key, value in self.tensors.items()}


@torch.no_grad()
def embed_renders(data: ShapesDataset, clip, vae=None, batch_size: int = 256) -> dict:
    """Every item of ``data`` encoded: ``{"image_embeds": CLIP image embeddings [N, D],
    "latents": VAE latents [N, C, h, w] (the images themselves without a VAE)}``, plus
    ``"text_embeds"`` [N, D'] when the items carry a ``text_embedding``."""
    parts: dict[str, list[torch.Tensor]] = {"image_embeds": [], "latents": [], "text_embeds": []}
    for start in tqdm(range(0, len(data), batch_size), desc="encoding images", leave=False):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        images = torch.stack([item["image"] for item in items])
        parts["image_embeds"].append(clip.encode_image(images))
        parts["latents"].append(
            images
            if vae is None
            else vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        )
        if "text_embedding" in items[0]:
            parts["text_embeds"].append(torch.stack([item["text_embedding"] for item in items]))
    return {key: torch.cat(value) for key, value in parts.items() if value}


# --------------------------------------------------------------------------------- decoder


@dataclass
class UnCLIPDecoderRecipe(TextToImageRecipe):
    """Options of the ``unclip_decoder`` recipe: the text-to-image recipe's (U-Net, schedule,
    ``vae``; ``caption_dropout`` drops the image embedding) plus these."""

    clip: str = "shapes-clip"  # the frozen CLIP model (shipped name or folder)
    cross_attention_dim: int = 128  # width of the 32 context tokens the embedding becomes
    dataset_length: int = 30_000
    validation_images: int = 64  # for the reconstruction CLIP-I
    sample_guidance: float = 3.0


def decoder_objective(schedule, weighting: str = "uniform"):
    """The DDPM loss (Ho et al. 2020, Alg. 1) of a decoder on ``batch["image"]`` given
    ``batch["image_embeds"]`` (through ``added_cond_kwargs``; no text states)."""
    diffusion = diffusion_objective(
        schedule, weighting=weighting, cond_key=("encoder_hidden_states", "added_cond_kwargs")
    )

    def objective(model, batch, generator):
        conditions = {"image_embeds": batch["image_embeds"]}
        batch = {"image": batch["image"], "encoder_hidden_states": None,
                 "added_cond_kwargs": conditions}  # fmt: skip
        return diffusion(model, batch, generator)

    return objective


def _validation_renders(count: int, size: int) -> torch.Tensor:
    data = ShapesDataset(length=count, size=size, split="validation", seed=0)
    return torch.stack([data[i]["image"] for i in range(count)])


def run_decoder(
    options: UnCLIPDecoderRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train the decoder; save an unCLIP folder without prior to ``out/pipeline``."""
    clip = load_clip_model(options.clip, resize=True)
    vae_path, vae = load_frozen_vae(options.vae)
    schedule = recipe_schedule(options)
    check_epsilon_prediction(schedule, clip_sample=False)  # unCLIP folders never clip x0
    if vae is None:
        size, channels = options.image_size, clip.config.in_channels
    else:
        size = options.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
        channels = vae.config.latent_channels
    dim = clip.config.embed_dim
    unet = latent_denoiser(
        options, size, channels, cross_attention_dim=options.cross_attention_dim,
        image_embedding_dim=dim,
    )  # fmt: skip
    renders = ShapesDataset(options.dataset_length, options.image_size, seed=config.seed)
    encoded = embed_renders(renders, clip, vae)
    data = TensorItems(image=encoded["latents"], image_embeds=encoded["image_embeds"])
    objective = with_caption_dropout(
        decoder_objective(schedule, options.weighting), torch.zeros(dim), options.caption_dropout,
        key="image_embeds",
    )  # fmt: skip

    def pipeline_of(model) -> UnCLIPPipeline:
        defaults = {"guidance": options.sample_guidance}
        return UnCLIPPipeline(model, vae, schedule, clip, name=out.name, defaults=defaults)

    sources = _validation_renders(SAMPLE_IMAGES, options.image_size)

    def sample_fn(model, step: int, out_dir: Path) -> None:
        """Rows: validation renders, then one decoding of each one's CLIP image embedding."""
        made = pipeline_of(model).variations(sources, 1, options.sample_steps, seed=0)
        path = Path(out_dir) / "samples" / f"step_{step:08d}.png"
        save_image_grid(torch.cat([sources, made]), path, nrow=len(sources))

    result = train(
        config, unet, objective, data, out, sample_fn=sample_fn, resume=resume, overwrite=overwrite
    )
    pipeline = pipeline_of((result.ema_model or result.model).eval())
    pipeline.save_pretrained(out / "pipeline")
    sources = _validation_renders(options.validation_images, options.image_size)
    made = pipeline.variations(sources, 1, options.sample_steps, seed=0)
    return {
        "parameters": parameter_count(pipeline.unet),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "vae": str(vae_path) if vae_path else None,
        "reconstruction_clip_i": clip_i_score(clip, sources, made),
        "pipeline": str(out / "pipeline"),
    }


# --------------------------------------------------------------------------------- prior


@dataclass
class UnCLIPPriorRecipe:
    """Options of the ``unclip_prior`` recipe."""

    decoder: str = "runs/shapes-unclip-decoder/pipeline"  # the decoder's unCLIP folder
    dataset_length: int = 30_000  # captioned renders (each distinct caption encoded once)
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    schedule: str = "cosine"  # DALL-E 2's prior: cosine schedule, 1000 steps, x0-prediction
    prediction_type: str = "sample"
    weighting: str = "uniform"
    text_dropout: float = 0.1
    sample_steps: int = 25
    sample_guidance: float = 3.0
    validation_captions: int = 256


@torch.no_grad()
def captioned_embeddings(
    clip, length: int, split: str = "train", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(text embeddings, image embeddings)`` [N, D] of shapes scenes ``0..length-1`` of
    ``split``: each caption's CLIP text embedding (every distinct caption encoded once, with a
    progress bar) and its render's CLIP image embedding."""
    bar = tqdm(desc="encoding captions", unit="caption", leave=False)

    def embed(prompts: list[str]) -> torch.Tensor:
        bar.update(len(prompts))
        return clip.encode_text(prompts, warn=False)

    with bar:
        data = ShapesDataset(length, clip.config.image_size, split, seed=seed, embed_fn=embed)
    encoded = embed_renders(data, clip)
    return encoded["text_embeds"], encoded["image_embeds"]


def run_prior(
    options: UnCLIPPriorRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train the prior; save the complete unCLIP pipeline (decoder + prior) to ``out/pipeline``."""
    decoder = UnCLIPPipeline.from_pretrained(options.decoder)
    clip = decoder.clip
    schedule = make_schedule(options.schedule, prediction_type=options.prediction_type)
    check_epsilon_prediction(schedule, clip_sample=False)  # embeddings are not clipped
    text, images = captioned_embeddings(clip, options.dataset_length, seed=config.seed)
    mean, std = images.mean(0, keepdim=True), images.std(0, keepdim=True).clamp(min=1e-6)
    with seeded_weights(config.seed):  # initial weights from the run's seed
        prior = embedding_prior(
            clip.config.embed_dim, options.num_layers, options.num_attention_heads,
            options.attention_head_dim,
        )  # fmt: skip
    with torch.no_grad():
        prior.clip_mean.copy_(mean)
        prior.clip_std.copy_(std)
    data = TensorItems(image=(images - mean) / std, proj_embedding=text)
    empty = clip.encode_text([""], warn=False)[0]
    objective = with_caption_dropout(
        diffusion_objective(schedule, weighting=options.weighting, cond_key="proj_embedding"),
        empty, options.text_dropout, key="proj_embedding",
    )  # fmt: skip
    defaults = {**decoder.defaults, "prior_steps": options.sample_steps,
                "prior_guidance": options.sample_guidance}  # fmt: skip
    result = train(config, prior, objective, data, out, resume=resume, overwrite=overwrite)
    final = (result.ema_model or result.model).eval()
    pipeline = replace(decoder, prior=final, prior_schedule=schedule, name=out.name,
                       defaults=defaults)  # fmt: skip
    pipeline.save_pretrained(out / "pipeline")
    text, images = captioned_embeddings(clip, options.validation_captions, "validation")
    sampled = pipeline.prior_embeddings(text, seed=0)
    return {
        "parameters": parameter_count(final),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "validation_prior_cosine": float((sampled * images).sum(1).mean()),
        "validation_text_cosine": float((text * images).sum(1).mean()),
        "pipeline": str(out / "pipeline"),
    }
