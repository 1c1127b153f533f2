"""Recipe: the KL autoencoder of latent diffusion, trained on shapes renders.

Loss (Rombach et al. 2022, Sec. 3 and Appendix G, without the perceptual and adversarial terms):
L1 reconstruction of a sample z ~ q(z | x) plus ``kl_weight`` * KL(q(z | x) || N(0, I)), the
weight kept small so the latent is near-deterministic but smooth. After training the latent
scaling factor is set to 1 / std of the latents of training images (computed from data, as
Stable Diffusion's 0.18215 was), so the diffusion model sees unit-variance latents.

Decoder fine-tuning (``init_from`` a trained VAE with ``train_encoder = false``): only the
decoder trains, on the frozen encoder's latents, so the latent space and its scaling factor stay
as they were and every diffusion model trained on them keeps working with the new decoder - how
Stable Diffusion's ft-EMA / ft-MSE decoders (stabilityai/sd-vae-ft-mse) replaced the original
one without retraining the U-Net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.data.shapes import ShapesDataset, render, sample_scene
from difflab.eval.shapes_detector import detector_accuracy
from difflab.models.networks import parameter_count, small_vae
from difflab.train import TrainConfig, train
from difflab.train.records import save_image_grid


@dataclass
class VAERecipe:
    """Options of the ``vae`` recipe."""

    image_size: int = 32
    dataset_length: int = 50_000
    block_out_channels: tuple = (32, 64, 64)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 16
    kl_weight: float = 1e-6
    scaling_images: int = 2048  # training images used to compute the latent scaling factor
    eval_images: int = 1024  # validation images for the PSNR figure
    detector_scenes: int = 500  # random scenes for the oracle detector's round-trip figures
    # a trained VAE to start from: its folder, a pipeline folder or a shipped latent model's name
    # ("shapes-t2i"); its architecture replaces the options above. "" = train from scratch
    init_from: str = ""
    # false: train only the decoder (needs init_from); latents and scaling factor stay as they are
    train_encoder: bool = True


def vae_objective(kl_weight: float):
    """``objective(vae, batch, generator)``: L1(x, D(z)) + kl_weight * KL, z ~ q(z | x)."""

    def objective(model, batch, generator):
        x = batch["image"]
        posterior = model.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
        z = posterior.mean + posterior.std * noise
        reconstruction = model.decode(z).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent dimension
        return (reconstruction - x).abs().mean() + kl_weight * kl

    return objective


def load_frozen_vae(folder: str, option: str = "vae") -> tuple[Path | None, object]:
    """(path, frozen AutoencoderKL) of a recipe's ``vae`` (or ``init_from``) option: a VAE folder,
    or the name of a shipped latent model or a pipeline folder whose VAE to reuse
    (``vae = "shapes-t2i"``); ``(None, None)`` for ``""`` (pixel space)."""
    from diffusers import AutoencoderKL

    from difflab.zoo import list_models

    if not folder:
        return None, None
    vae_path = Path(folder)
    shipped = list_models()
    if not (vae_path / "config.json").is_file() and folder in shipped:
        vae_path = shipped[folder] / "vae"
    elif (vae_path / "vae" / "config.json").is_file():  # a pipeline folder: its VAE
        vae_path = vae_path / "vae"
    if not (vae_path / "config.json").is_file():
        pixel_hint = ', or set `vae = ""` for a pixel-space model' if option == "vae" else ""
        shipped_example = (
            f"`{option} shapes-t2i`"
            if option.startswith("--")
            else f'`{option} = "shapes-t2i"` in the recipe\'s [recipe] section'
        )
        raise FileNotFoundError(
            f"no trained VAE at {vae_path}; train one first (`difflab train shapes-vae --out "
            f"{vae_path.parent}`), or name a shipped latent model whose VAE to use "
            f"({shipped_example}){pixel_hint}."
        )
    vae = AutoencoderKL.from_pretrained(vae_path, torch_dtype=torch.float32, use_safetensors=True)
    return vae_path, vae.eval().requires_grad_(False)


def starting_vae(options: VAERecipe):
    """The autoencoder a run trains: a fresh one from the options, or ``init_from``'s with the
    encoder frozen when ``train_encoder`` is false."""
    if not options.init_from:
        if not options.train_encoder:
            raise ValueError(
                "train_encoder = false trains only the decoder of an existing autoencoder; set "
                'init_from to it (a VAE folder or a shipped model, e.g. init_from = "shapes-t2i") '
                "or set train_encoder = true."
            )
        return small_vae(
            block_out_channels=options.block_out_channels,
            latent_channels=options.latent_channels,
            layers_per_block=options.layers_per_block,
            norm_num_groups=options.norm_num_groups,
            sample_size=options.image_size,
        )
    _, vae = load_frozen_vae(options.init_from, option="init_from")
    vae.train()
    trained = (vae,) if options.train_encoder else (vae.decoder, vae.post_quant_conv)
    for module in trained:
        module.requires_grad_(True)
    return vae


def image_batches(dataset, count: int, batch_size: int = 256):
    """The first ``count`` images of a dataset, in stacked batches."""
    for start in range(0, min(count, len(dataset)), batch_size):
        stop = min(start + batch_size, count, len(dataset))
        yield torch.stack([dataset[i]["image"] for i in range(start, stop)])


@torch.no_grad()
def latent_scaling_factor(vae, dataset, count: int) -> float:
    """1 / std of the posterior means of ``count`` training images."""
    latents = torch.cat([vae.encode(x).latent_dist.mean for x in image_batches(dataset, count)])
    return float(1.0 / latents.std())


@torch.no_grad()
def reconstruction_psnr(vae, dataset, count: int) -> float:
    """PSNR (dB, images in [-1, 1] so the peak-to-peak range is 2) of posterior-mean
    reconstructions of ``count`` images."""
    errors = []
    for x in image_batches(dataset, count):
        reconstruction = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        errors.append((reconstruction - x).pow(2).flatten(1).mean(1))
    mse = float(torch.cat(errors).mean())
    return 10 * math.log10(4.0 / mse)


@torch.no_grad()
def round_trip(vae, images: list[np.ndarray]) -> list[np.ndarray]:
    """VAE reconstructions (posterior mean) of HWC float images in [0, 1], quantised to 8 bits
    as a saved PNG would be."""
    x = torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2) * 2 - 1
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    y = ((y.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round() / 255
    return list(y.astype(np.float32))


def random_scene_renders(count: int, size: int, seed: int = 2024) -> tuple[list, list]:
    """``count`` random scenes and their renders (HWC floats in [0, 1]): the scenes the round-trip
    detector figures are measured on."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    return scenes, [render(scene, size) for scene in scenes]


def round_trip_detector_accuracy(vae, scenes: int, size: int, seed: int = 2024) -> dict:
    """The oracle detector's per-attribute accuracy (shape, colour, size, count) on round trips
    of ``scenes`` random scenes: what of the scene the autoencoder keeps (1.0 on the renders)."""
    drawn, images = random_scene_renders(scenes, size, seed)
    reconstructed = []
    for start in range(0, len(images), 256):
        reconstructed += round_trip(vae, images[start : start + 256])
    return detector_accuracy(drawn, reconstructed)


def run(options: VAERecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool) -> dict:
    """Train, set the scaling factor, save ``out/vae`` and return the measured figures."""
    vae = starting_vae(options)
    data = ShapesDataset(length=options.dataset_length, size=options.image_size, seed=config.seed)
    validation = ShapesDataset(
        length=options.eval_images, size=options.image_size, split="validation"
    )
    fixed = torch.stack([validation[i]["image"] for i in range(min(16, len(validation)))])

    def sample_fn(model, step, out_dir):
        reconstruction = model.decode(model.encode(fixed).latent_dist.mean).sample
        save_image_grid(
            torch.cat([fixed, reconstruction.clamp(-1, 1)]),
            Path(out_dir) / "samples" / f"step_{step:08d}.png",
            nrow=16,
            metadata={"step": step, "rows": "originals, reconstructions"},
        )

    result = train(
        config, vae, vae_objective(options.kl_weight), data, out,
        sample_fn=sample_fn, resume=resume, overwrite=overwrite,
    )  # fmt: skip
    final = (result.ema_model or result.model).eval()
    if options.train_encoder:  # a frozen encoder keeps the latents, and so their scaling factor
        final.register_to_config(
            scaling_factor=latent_scaling_factor(final, data, options.scaling_images)
        )
    final.save_pretrained(out / "vae", safe_serialization=True)
    accuracy = round_trip_detector_accuracy(final, options.detector_scenes, options.image_size)
    return {
        "parameters": parameter_count(final),
        "trained_parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
        "scaling_factor": final.config.scaling_factor,
        "psnr_db": reconstruction_psnr(final, validation, options.eval_images),
        "round_trip_detector_accuracy": {
            k: float(accuracy[k]) for k in ("shape", "colour", "size", "count")
        },
        "steps": result.step,
    }
