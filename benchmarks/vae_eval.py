"""How much an autoencoder loses: PSNR on validation renders, the oracle detector's accuracy on
round-tripped random scenes, and ShapesEval of the default suite's ground-truth renders before
and after a round trip, for one or more autoencoders side by side (e.g. a VAE and the same VAE
with a fine-tuned decoder).

    python benchmarks/vae_eval.py --vae runs/shapes-vae/vae [--vae runs/shapes-vae-decoder/vae]
        [--images-per-prompt 2] [--grid docs/reports/vae_decoder/round_trips.png]

``--vae`` takes a VAE folder, a pipeline folder or a shipped model's name (its VAE).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from difflab.data.shapes import ShapesDataset
from difflab.eval.shapes import detector_accuracy, render_suite_folder, score_folder
from difflab.recipes.vae import (
    load_frozen_vae,
    random_scene_renders,
    reconstruction_psnr,
    round_trip,
)


def round_trip_folder(vae, source: Path, target: Path) -> None:
    """Write the VAE reconstruction of every PNG of ``source`` at the same relative path."""
    for path in sorted(source.rglob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        out = (round_trip(vae, [image])[0] * 255).round().astype(np.uint8)
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(out).save(target / path.relative_to(source))


def save_round_trip_grid(path: Path, scenes, originals, vaes, columns: int = 12) -> None:
    """Rows: the first ``columns`` scenes holding a small star or cross (the shapes an 8x8
    latent blurs most), then their round trip through each VAE; 4x nearest-neighbour upscale."""
    picked = [
        image
        for scene, image in zip(scenes, originals, strict=True)
        if any(o.size == "small" and o.shape in ("star", "cross") for o in scene.objects)
    ][:columns]
    rows = [picked] + [round_trip(vae, picked) for vae in vaes]
    grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    image = Image.fromarray((grid * 255).round().astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.resize((image.width * 4, image.height * 4), Image.NEAREST).save(path)
    print(f"round trips written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", action="append", required=True, help="repeat to compare")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--psnr-images", type=int, default=1024)
    parser.add_argument("--detector-scenes", type=int, default=500)
    parser.add_argument(
        "--grid",
        type=Path,
        help="save a PNG: scenes with small stars / crosses, then each round trip",
    )
    args = parser.parse_args()
    vaes = {name: load_frozen_vae(name, option="--vae")[1] for name in args.vae}
    validation = ShapesDataset(length=args.psnr_images, size=32, split="validation")
    scenes, originals = random_scene_renders(args.detector_scenes, 32)
    columns = {"ground truth": None, **vaes}
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "ground-truth"
        render_suite_folder(suite, images_per_prompt=args.images_per_prompt)
        for index, (name, vae) in enumerate(columns.items()):
            column = rows.setdefault(name, {})
            images, folder = originals, suite
            if vae is not None:
                column["PSNR (dB)"] = (
                    f"{reconstruction_psnr(vae, validation, args.psnr_images):.2f}"
                )
                images, folder = round_trip(vae, originals), Path(tmp) / f"vae{index}"
                round_trip_folder(vae, suite, folder)
            accuracy = detector_accuracy(scenes, images)
            for key in ("shape", "colour", "size", "count"):
                column[f"detector {key}"] = f"{accuracy[key]:.3f}"
            report = score_folder(folder)
            for task, figures in report["tasks"].items():
                column[f"ShapesEval {task}"] = f"{figures['score']:.3f}"
            column["ShapesEval overall"] = f"{report['overall']:.3f}"
    print(
        f"PSNR on {args.psnr_images} validation renders; detector accuracy on "
        f"{args.detector_scenes} random scenes; ShapesEval of the default suite's renders "
        f"({args.images_per_prompt} per prompt), each after a round trip through the VAE\n"
    )
    names = list(columns)
    keys = list(dict.fromkeys(k for name in names for k in rows[name]))
    if args.grid is not None:
        save_round_trip_grid(args.grid, scenes, originals, list(vaes.values()))
    print("| figure | " + " | ".join(f"`{n}`" if columns[n] else n for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in keys:
        print(f"| {key} | " + " | ".join(rows[n].get(key, "") for n in names) + " |")


if __name__ == "__main__":
    main()
