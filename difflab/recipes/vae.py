"""Recipe: the KL autoencoder of latent diffusion, trained on shapes renders.

Loss (Rombach et al. 2022, Sec. 3 and Appendix G, without the perceptual and adversarial terms):
L1 reconstruction of a sample z ~ q(z | x) plus ``kl_weight`` * KL(q(z | x) || N(0, I)), the
weight kept small so the latent is near-deterministic but smooth. After training the latent
scaling factor is set to 1 / std of the latents of training images (computed from data, as
Stable Diffusion's 0.18215 was), so the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.data.shapes import ShapesDataset
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


def run(options: VAERecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool) -> dict:
    """Train, set the scaling factor, save ``out/vae`` and return the measured figures."""
    vae = small_vae(
        block_out_channels=options.block_out_channels,
        latent_channels=options.latent_channels,
        layers_per_block=options.layers_per_block,
        norm_num_groups=options.norm_num_groups,
        sample_size=options.image_size,
    )
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
    final.register_to_config(
        scaling_factor=latent_scaling_factor(final, data, options.scaling_images)
    )
    final.save_pretrained(out / "vae", safe_serialization=True)
    return {
        "parameters": parameter_count(final),
        "scaling_factor": final.config.scaling_factor,
        "psnr_db": reconstruction_psnr(final, validation, options.eval_images),
        "steps": result.step,
    }
