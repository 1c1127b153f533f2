"""Recipe: the shapes text-to-image latent diffusion model (the Stable Diffusion recipe, small),
and its pixel-space baseline (``vae = ""``: the same denoisers on the 32x32 images themselves).

Rombach et al. 2022: a frozen autoencoder (the ``vae`` recipe) maps 32x32 renders to 8x8x4
latents scaled to unit variance; a U-Net with cross-attention to the frozen text encoder's
per-token states (Saharia et al. 2022 use a frozen language model the same way) learns to
denoise them with the DDPM loss; ``denoiser = "dit"`` swaps the U-Net for a diffusion transformer
(Peebles & Xie 2023, with PixArt-alpha's cross-attention to text). Captions are dropped (replaced by the empty prompt's encoding)
with probability ``caption_dropout`` so the same network is also the unconditional model that
classifier-free guidance needs (Ho & Salimans 2022, Sec. 3.2). Latents and caption encodings are
computed once before training (and kept in a cache keyed by their inputs, see
:func:`cached_encode_dataset`): the frozen parts never run inside the training loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from difflab.data.shapes import ShapesDataset
from difflab.data.shapes_captions import RELATION_PROBABILITY
from difflab.models.networks import (
    parameter_count,
    text_conditional_dit,
    text_conditional_unet,
)
from difflab.models.text_encoder import PromptEncoder
from difflab.pipelines.text_to_image import TextToImagePipeline, image_grid
from difflab.recipes.vae import load_frozen_vae
from difflab.schedules import check_epsilon_prediction, make_schedule, shifted_schedule
from difflab.train import TrainConfig, diffusion_objective, train

SAMPLE_PROMPTS = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "two yellow stars",
    "a red circle above a blue square",
    "a purple heart to the left of a white ring",
    "three black crosses",
    "a large pink circle",
)


@dataclass
class TextToImageRecipe:
    """Options of the ``text_to_image`` recipe."""

    vae: str = "runs/shapes-vae/vae"  # folder of a trained AutoencoderKL; "" = pixel space
    image_size: int = 32
    dataset_length: int = 60_000
    denoiser: str = "unet"  # "unet" (UNet2DConditionModel) or "dit" (diffusion transformer)
    # U-Net options
    block_out_channels: tuple = (64, 128)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    attention_levels: tuple = ()  # cross-attention per level, full resolution first; () = default
    # DiT options
    dit_layers: int = 6
    dit_heads: int = 4
    dit_head_dim: int = 32
    dit_patch_size: int = 1
    schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # > 1: a noisier schedule, log-SNR shifted by -2 log(schedule_shift) (simple diffusion)
    schedule_shift: float = 1.0
    prediction_type: str = "epsilon"
    weighting: str = "min_snr"
    caption_dropout: float = 0.1
    sample_steps: int = 20
    sample_guidance: float = 5.0
    # pixel space (vae = "") only: the folder's default of clipping the implied x0 to [-1, 1] at
    # every sampling step (DDPM's sampler; diffusers' clip_sample); latents are never clipped
    clip_sample: bool = True
    # a shipped model name or pipeline folder whose denoiser weights training starts from
    # (fine-tuning, or more compute for a shipped model); "" = random initialisation
    init_from: str = ""
    # the training captions: the share of relation captions among scenes with a clear pair, and
    # their wording ("grammar" or "plain", see difflab.data.shapes_captions.RELATION_WORDINGS)
    relation_probability: float = RELATION_PROBABILITY
    relation_wording: str = "grammar"


class CachedLatents(torch.utils.data.Dataset):
    """Pre-encoded training pairs: scaled VAE latents and the caption's token states."""

    def __init__(self, latents: torch.Tensor, caption_rows: torch.Tensor, table: torch.Tensor):
        self.latents, self.caption_rows, self.table = latents, caption_rows, table

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.latents[index],
            "encoder_hidden_states": self.table[self.caption_rows[index]].float(),
        }

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch in two indexing operations (the DataLoader calls this instead of
        ``__getitem__`` per example; the Trainer then skips collation): at batch 2048 the text
        states are 100 MB, which per-example fetching and stacking cannot keep up with on a GPU."""
        return self[torch.as_tensor(indices)]  # __getitem__'s indexing takes a tensor of rows


def encoding_device() -> torch.device:
    """Where the frozen VAE and text encoder run while a training set is encoded: this process's
    GPU when there is one (``LOCAL_RANK`` under ``accelerate launch``), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def rendering_workers() -> int:
    """DataLoader workers that render scenes while a training set is encoded: none on a small
    machine (the main process renders), up to 8 where there are spare cores."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return min(8, cores - 1) if cores > 4 else 0


@torch.no_grad()
def encode_captions(
    unique: list[str], prompt_encoder: PromptEncoder, batch_size: int = 256
) -> torch.Tensor:
    """The frozen text encoder's token states ``[len(unique), tokens, width]`` (fp16, CPU)."""
    return torch.cat(
        [
            prompt_encoder(unique[i : i + batch_size], warn=False).half().cpu()
            for i in tqdm(range(0, len(unique), batch_size), desc="encoding captions", leave=False)
        ]
    )


def caption_cache_path(unique: list[str], prompt_encoder: PromptEncoder) -> Path:
    """Where :func:`cached_encode_captions` keeps the states of ``unique``: a key of the text
    encoder (window and weights) and the exact caption list."""
    digest = hashlib.sha256(f"captions {prompt_encoder.max_length}\n".encode())
    _hash_text_encoder(digest, prompt_encoder)
    digest.update("\n".join(unique).encode())
    return encoding_cache_dir() / f"captions-{digest.hexdigest()[:24]}.safetensors"


def cached_encode_captions(
    unique: list[str], prompt_encoder: PromptEncoder, batch_size: int = 256
) -> tuple[torch.Tensor, Path]:
    """:func:`encode_captions` and the file it is kept in (:func:`caption_cache_path`), so the
    pixel and latent (or 16 and 32 px) encodings of the same scenes, whose captions are
    identical, run the text encoder once - it is most of the encoding time - and store its
    states once."""
    path = caption_cache_path(unique, prompt_encoder)
    if path.is_file():
        return load_file(path)["table"], path
    table = encode_captions(unique, prompt_encoder, batch_size)
    _save_atomically({"table": table.contiguous()}, path)
    return table, path


@torch.no_grad()
def encode_images(data: ShapesDataset, vae, batch_size: int = 256) -> tuple[torch.Tensor, list]:
    """Every image's latent (posterior mean x scaling factor; with ``vae=None``, pixel space,
    the image itself), on the CPU, and every caption. The VAE runs where its weights are (see
    :func:`encoding_device`); scenes are rendered by :func:`rendering_workers` worker
    processes."""
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, num_workers=rendering_workers(), collate_fn=list
    )
    latents, captions = [], []
    for items in tqdm(loader, desc="encoding images", leave=False):
        images = torch.stack([item["image"] for item in items])
        if vae is not None:
            images = images.to(next(vae.parameters()).device)
            images = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        latents.append(images.cpu())
        captions.extend(item["caption"] for item in items)
    return torch.cat(latents), captions


def caption_rows(captions: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct captions, sorted, and each caption's row among them."""
    unique = sorted(set(captions))
    row = {caption: i for i, caption in enumerate(unique)}
    return unique, torch.tensor([row[c] for c in captions])


def encode_dataset(
    data: ShapesDataset, vae, prompt_encoder: PromptEncoder, batch_size: int = 256
) -> CachedLatents:
    """Encode every image (:func:`encode_images`) and every distinct caption once
    (:func:`encode_captions`). The result is on the CPU."""
    latents, captions = encode_images(data, vae, batch_size)
    unique, rows = caption_rows(captions)
    return CachedLatents(latents, rows, encode_captions(unique, prompt_encoder, batch_size))


def encoding_cache_dir() -> Path:
    """Where encoded training sets are kept: ``$DIFFLAB_CACHE`` or ``~/.cache/difflab``."""
    root = os.environ.get("DIFFLAB_CACHE") or Path.home() / ".cache" / "difflab"
    return Path(root) / "encoded"


def _hash_text_encoder(digest, prompt_encoder: PromptEncoder) -> None:
    """Add (a sample of every tensor of) the text encoder's weights to a sha256 ``digest``."""
    for name, tensor in sorted(prompt_encoder.text_encoder.state_dict().items()):
        digest.update(name.encode() + tensor.float().cpu().numpy().tobytes()[:4096])


def _save_atomically(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """``save_file`` to a temporary sibling renamed into place, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def encoding_key(vae_path: Path | None, prompt_encoder: PromptEncoder, data: ShapesDataset) -> str:
    """A digest of everything the encoded training set depends on: the VAE's config and weights,
    the text encoder's window and (a sample of every tensor of its) weights, and the dataset's
    length, size, seed, split, style, scene distribution and caption options."""
    digest = hashlib.sha256(b"pixels" if vae_path is None else b"")
    for file in sorted(vae_path.glob("*")) if vae_path is not None else ():
        digest.update(file.name.encode() + file.read_bytes())
    _hash_text_encoder(digest, prompt_encoder)
    description = (
        prompt_encoder.max_length, len(data), data.size, data.seed, data.split, data.style,
        data.config,
    )  # fmt: skip
    captioning = (data.relation_probability, data.relation_wording)
    if captioning != (RELATION_PROBABILITY, "grammar"):  # the default keeps the keys it had
        description += captioning
    digest.update(repr(description).encode())
    return digest.hexdigest()[:24]


def cached_encode_dataset(
    data: ShapesDataset, vae, vae_path: Path | None, prompt_encoder: PromptEncoder
) -> CachedLatents:
    """:func:`encode_dataset`, kept on disk (safetensors, written atomically) under a key of its
    inputs, so a resumed run or a second recipe on the same data does not encode it again. The
    file holds the latents and caption rows and names the :func:`cached_encode_captions` file
    that holds the caption states (files written before that split hold the states
    themselves)."""
    path = encoding_cache_dir() / f"{encoding_key(vae_path, prompt_encoder, data)}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        if "table" in tensors:  # the older single-file layout
            return CachedLatents(tensors["latents"], tensors["caption_rows"], tensors["table"])
        with safe_open(path, "pt") as handle:
            table_path = path.parent / handle.metadata()["captions"]
        if table_path.is_file():  # else the captions file was deleted: encode again
            table = load_file(table_path)["table"]
            return CachedLatents(tensors["latents"], tensors["caption_rows"], table)
    latents, captions = encode_images(data, vae)
    unique, rows = caption_rows(captions)
    table, table_path = cached_encode_captions(unique, prompt_encoder)
    _save_atomically(
        {"latents": latents.contiguous(), "caption_rows": rows},
        path,
        metadata={"captions": table_path.name},
    )
    return CachedLatents(latents, rows, table)


def with_caption_dropout(
    objective, empty: torch.Tensor, probability: float, key: str = "encoder_hidden_states"
):
    """Replace each example's text states (or whatever condition the batch holds under ``key``,
    e.g. an unCLIP decoder's image embedding) by the null condition ``empty`` with
    ``probability``, drawing from the Trainer's generator (so a resumed run drops the same
    captions)."""

    def dropped(model, batch, generator):
        context = batch[key]
        drop = torch.rand(context.shape[0], generator=generator) < probability
        if drop.any():
            context = context.clone()
            context[drop.to(context.device)] = empty.to(context)
        return objective(model, {**batch, key: context}, generator)

    return dropped


def latent_denoiser(
    options: TextToImageRecipe, latent_size: int, latent_channels: int, **unet_options
):
    """The denoiser the recipe names: a cross-attention U-Net or a DiT. ``unet_options`` go to
    :func:`~difflab.models.networks.text_conditional_unet` (the SR and unCLIP-decoder recipes'
    variants, which are U-Nets only)."""
    if unet_options and options.denoiser != "unet":
        raise ValueError(
            f'this recipe trains a U-Net; set denoiser = "unet", not {options.denoiser!r}.'
        )
    if options.denoiser == "unet":
        return text_conditional_unet(
            sample_size=latent_size,
            in_channels=latent_channels,
            block_out_channels=options.block_out_channels,
            layers_per_block=options.layers_per_block,
            attention_head_dim=options.attention_head_dim,
            norm_num_groups=options.norm_num_groups,
            attention_levels=tuple(options.attention_levels) or None,
            **unet_options,
        )
    if options.denoiser == "dit":
        return text_conditional_dit(
            sample_size=latent_size,
            in_channels=latent_channels,
            num_layers=options.dit_layers,
            num_attention_heads=options.dit_heads,
            attention_head_dim=options.dit_head_dim,
            patch_size=options.dit_patch_size,
        )
    raise ValueError(f'unknown denoiser {options.denoiser!r} in the recipe; use "unet" or "dit".')


def start_from_pipeline(denoiser, name_or_folder: str, vae, schedule) -> None:
    """Load a trained text-to-image pipeline's denoiser weights into the recipe's ``denoiser``
    (the ``init_from`` option), so a run continues a shipped model with more compute or
    fine-tunes it. The weights only make sense with the latent space and noise schedule they
    were trained on, so both must match the recipe's, as must every tensor's name and shape;
    otherwise a ValueError says what differs and which recipe setting to change."""
    from difflab.models.weights import state_dict_differences
    from difflab.pipelines.text_to_image import schedule_from_diffusers_config
    from difflab.zoo import resolve_model

    folder = resolve_model(name_or_folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"init_from = {name_or_folder!r}: no denoiser weights at {weights}; name a shipped "
            "text-to-image model (`difflab models`) or a pipeline folder written by training."
        )
    state = load_file(weights)
    own = denoiser.state_dict()
    problems = [names[:3] for names in state_dict_differences(own, state)]
    problems = [name for names in problems for name in names]
    if problems:
        raise ValueError(
            f"init_from = {name_or_folder!r}: its denoiser ({folder / 'unet' / 'config.json'}) "
            f"is not the recipe's architecture (first differences: {', '.join(problems)}); set "
            "the recipe's denoiser options (block_out_channels, layers_per_block, dit_layers, "
            "...) to that model's."
        )
    init_vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    if not same_latent_space(vae, load_file(init_vae) if init_vae.is_file() else None):
        raise ValueError(
            f"init_from = {name_or_folder!r} was trained on another latent space than the "
            f"recipe's vae; set vae = {name_or_folder!r} in the recipe's [recipe] section "
            '(its own VAE; vae = "" where it is a pixel-space model).'
        )
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    theirs = schedule_from_diffusers_config(config)
    if theirs.prediction_type != schedule.prediction_type or not same_noise_levels(
        theirs, schedule
    ):
        raise ValueError(
            f"init_from = {name_or_folder!r} was trained with another noise schedule or "
            f"prediction type ({config.get('beta_schedule')}, {config.get('beta_start')}-"
            f"{config.get('beta_end')}, {theirs.prediction_type}); set the recipe's schedule, "
            "beta_start, beta_end and prediction_type to those."
        )
    denoiser.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def same_latent_space(vae, stored: dict | None) -> bool:
    """Whether a model whose VAE weights are ``stored`` (None: a pixel-space model) works in the
    latent space of ``vae`` (None: pixel space): both pixel space, or the same VAE weights."""
    if vae is None or stored is None:
        return vae is None and stored is None
    return same_weights(vae.state_dict(), stored)


def same_noise_levels(a, b) -> bool:
    """Whether two noise schedules have the same abar_t at every trained timestep (up to the
    rounding of a stored config)."""
    return torch.allclose(a.alphas_cumprod, b.alphas_cumprod, rtol=1e-4)


def same_weights(ours: dict, stored: dict) -> bool:
    """Whether two state dicts hold the same tensors up to fp16 storage (shipped weights are
    fp16, a local run's fp32)."""
    return ours.keys() == stored.keys() and all(
        torch.allclose(ours[k].float(), stored[k].float(), rtol=1e-3, atol=1e-4) for k in ours
    )


def recipe_schedule(options: TextToImageRecipe):
    """The noise schedule the recipe's options name, log-SNR shifted by ``schedule_shift``
    (:func:`~difflab.schedules.shifted_schedule`; the pipeline folder stores the shifted betas,
    so diffusers samples it as trained)."""
    schedule = make_schedule(
        options.schedule,
        beta_start=options.beta_start,
        beta_end=options.beta_end,
        prediction_type=options.prediction_type,
    )
    return shifted_schedule(schedule, options.schedule_shift)


def grid_sample_fn(pipeline_of, **call_options):
    """A Trainer ``sample_fn`` that writes ``samples/step_XXXXXXXX.png``: one image per
    :data:`SAMPLE_PROMPTS` from ``pipeline_of(model)(prompts, seed=0, **call_options)``."""

    def sample_fn(model, step: int, out_dir: Path) -> None:
        images = pipeline_of(model)(list(SAMPLE_PROMPTS), seed=0, **call_options)
        path = Path(out_dir) / "samples" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(images, columns=len(SAMPLE_PROMPTS)).save(path)

    return sample_fn


def run(
    options: TextToImageRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train the latent denoiser and save the whole pipeline to ``out/pipeline``."""
    vae_path, vae = load_frozen_vae(options.vae)
    prompt_encoder = PromptEncoder.from_pretrained()
    device = encoding_device()
    prompt_encoder.text_encoder.to(device)
    if vae is not None:
        vae.to(device)
    schedule = recipe_schedule(options)
    clip_sample = options.clip_sample and vae is None  # latents are never clipped
    check_epsilon_prediction(schedule, clip_sample=clip_sample)
    if vae is None:  # pixel space: the denoiser sees the images themselves
        latent_size, latent_channels = options.image_size, 3
    else:
        latent_size = options.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
        latent_channels = vae.config.latent_channels
    unet = latent_denoiser(options, latent_size, latent_channels)
    if options.init_from:
        start_from_pipeline(unet, options.init_from, vae, schedule)
    data = cached_encode_dataset(
        ShapesDataset(
            length=options.dataset_length,
            size=options.image_size,
            seed=config.seed,
            relation_probability=options.relation_probability,
            relation_wording=options.relation_wording,
        ),
        vae,
        vae_path,
        prompt_encoder,
    )
    empty = prompt_encoder([""], warn=False)[0]
    objective = with_caption_dropout(
        diffusion_objective(
            schedule, weighting=options.weighting, cond_key="encoder_hidden_states"
        ),
        empty,
        options.caption_dropout,
    )

    def pipeline_of(model) -> TextToImagePipeline:
        return TextToImagePipeline(
            model, vae, prompt_encoder, schedule, name="shapes-t2i",
            clip_sample=clip_sample,
        )  # fmt: skip

    sample_fn = grid_sample_fn(
        pipeline_of, steps=options.sample_steps, guidance=options.sample_guidance
    )
    result = train(
        config, unet, objective, data, out, sample_fn=sample_fn, resume=resume, overwrite=overwrite
    )
    final = (result.ema_model or result.model).eval()
    pipeline_of(final).save_pretrained(out / "pipeline", include_text_encoder=False)
    return {
        "parameters": parameter_count(final),
        "steps": result.step,
        "train_seconds": result.total_seconds,  # across resumes
        "train_images_per_second": result.images_per_second,  # of this call's updates
        "pipeline": str(out / "pipeline"),
    }
