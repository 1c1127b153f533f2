"""How much an autoencoder loses: PSNR on validation renders, and ShapesEval of the default
suite's ground-truth renders before and after a round trip through the VAE (side by side).

    python benchmarks/vae_eval.py --vae runs/shapes-vae/vae [--images-per-prompt 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from difflab.data.shapes import ShapesDataset, render, sample_scene
from difflab.eval.shapes import (
    detector_accuracy,
    format_report_table,
    render_suite_folder,
    score_folder,
)
from difflab.recipes.vae import reconstruction_psnr


@torch.no_grad()
def round_trip_folder(vae, source: Path, target: Path) -> None:
    """Write the VAE reconstruction of every PNG of ``source`` at the same relative path."""
    for path in sorted(source.rglob("*.png")):
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
        x = torch.from_numpy(array).permute(2, 0, 1)[None]
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)[0]
        out = ((y.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(out).save(target / path.relative_to(source))


@torch.no_grad()
def round_trip(vae, images: list[np.ndarray]) -> list[np.ndarray]:
    """VAE reconstructions (posterior mean) of HWC float images in [0, 1], quantised to 8 bits
    as a saved PNG would be."""
    x = torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2) * 2 - 1
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    y = ((y.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round() / 255
    return list(y.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--psnr-images", type=int, default=1024)
    parser.add_argument("--detector-scenes", type=int, default=500)
    args = parser.parse_args()
    vae = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32).eval()
    validation = ShapesDataset(length=args.psnr_images, size=32, split="validation")
    print(
        f"PSNR on {args.psnr_images} validation renders: "
        f"{reconstruction_psnr(vae, validation, args.psnr_images):.2f} dB"
    )
    rng = np.random.default_rng(2024)
    scenes = [sample_scene(rng) for _ in range(args.detector_scenes)]
    originals = [render(scene, 32) for scene in scenes]
    print(f"\nDetector accuracy per attribute on {len(scenes)} random scenes:")
    for name, images in (
        ("ground truth", originals),
        ("VAE round trip", round_trip(vae, originals)),
    ):
        accuracy = detector_accuracy(scenes, images)
        print(
            f"  {name:15s} "
            + "  ".join(f"{k} {accuracy[k]:.3f}" for k in ("shape", "colour", "size", "count"))
        )
    with tempfile.TemporaryDirectory() as tmp:
        original, reconstructed = Path(tmp) / "original", Path(tmp) / "reconstructed"
        render_suite_folder(original, images_per_prompt=args.images_per_prompt)
        round_trip_folder(vae, original, reconstructed)
        for name, folder in (("ground truth", original), ("VAE round trip", reconstructed)):
            print(f"\nShapesEval, {name}:")
            print(format_report_table(score_folder(folder)))


if __name__ == "__main__":
    main()
