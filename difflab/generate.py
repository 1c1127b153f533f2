"""Generate images to PNG files that carry their own recipe.

Every PNG holds its prompt, model, sampler, steps, guidance and seed in PNG text chunks, so
:func:`settings_from_png` + :func:`generate_images` reproduce it bit for bit. Each image is
sampled alone from its own seed, so it does not depend on the batch it was generated in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin
from tqdm.auto import tqdm

from difflab import __version__
from difflab.pipelines.text_to_image import image_grid, images_to_pil

METADATA_KEY = "difflab"


@dataclass
class GenerationSettings:
    """Everything that determines one generated image. ``sampler`` or ``guidance`` None means
    the model's default (see :func:`complete_settings`)."""

    prompt: str
    model: str
    sampler: str | None = "dpmpp_2m"
    steps: int = 20
    guidance: float | None = 5.0
    seed: int = 0


def complete_settings(pipeline, settings: list[GenerationSettings]) -> list[GenerationSettings]:
    """Fill in the sampler and guidance a setting leaves open (None) with the pipeline's
    defaults - a distilled model's folder names its own sampler (``lcm`` for a latent
    consistency model) - so that every PNG records what actually ran."""
    from dataclasses import replace

    completed = []
    for s in settings:
        sampler, guidance, _ = pipeline.sampling_settings(s.sampler, s.guidance)
        completed.append(replace(s, sampler=sampler, guidance=guidance))
    return completed


def save_png(image: Image.Image, path: Path, settings: GenerationSettings) -> None:
    """Write ``image`` with ``settings`` (JSON, plus one chunk per field) in its text chunks."""
    info = PngImagePlugin.PngInfo()
    record = {**asdict(settings), "difflab_version": __version__}
    info.add_text(METADATA_KEY, json.dumps(record))
    for key, value in record.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)


def settings_from_png(path: str | Path) -> GenerationSettings:
    """Read the generation settings stored in a PNG written by :func:`save_png`."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}) or {}
    if METADATA_KEY not in text:
        raise ValueError(
            f"{path} carries no difflab generation settings (no '{METADATA_KEY}' PNG text "
            "chunk); only PNGs written by `difflab generate` can be reproduced."
        )
    record = json.loads(text[METADATA_KEY])
    fields = GenerationSettings.__dataclass_fields__
    return GenerationSettings(**{k: v for k, v in record.items() if k in fields})


def generate_images(
    pipeline, settings: list[GenerationSettings], progress: bool = True
) -> list[Image.Image]:
    """Generate one image per settings entry, each sampled alone from its own seed."""
    images = []
    for s in tqdm(settings, desc="generating", disable=not progress or len(settings) < 2):
        latents = pipeline.latents(
            [s.prompt], 1, steps=s.steps, guidance=s.guidance, sampler=s.sampler, seed=s.seed
        )
        images.extend(images_to_pil(pipeline.decode(latents)))
    return images


def write_outputs(
    images: list[Image.Image], settings: list[GenerationSettings], out: Path
) -> list[Path]:
    """Save each image as ``out/NNN-<prompt>.png`` (with metadata) and a ``grid.png``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, s) in enumerate(zip(images, settings, strict=True)):
        slug = "".join(c if c.isalnum() else "-" for c in s.prompt.lower())[:48].strip("-")
        path = out / f"{i:03d}-{slug}-seed{s.seed}.png"
        save_png(image, path, s)
        paths.append(path)
    if len(images) > 1:
        image_grid(images).save(out / "grid.png")
    return paths


def generate_suite_folder(
    pipeline,
    out_dir: str | Path,
    suite: list[dict],
    images_per_prompt: int = 4,
    steps: int = 20,
    sampler: str = "dpmpp_2m",
    guidance: float = 5.0,
    seed: int = 0,
    model_name: str = "",
    progress: bool = True,
) -> int:
    """Generate images for every prompt of a ShapesEval suite in its folder layout
    (``out_dir/00012/3.png``: prompt line 12, image 3), ready for
    :func:`difflab.eval.shapes.score_folder`. Image k of prompt i uses seed
    ``seed + 1000 * i + k``, recorded in its PNG like every generated image. Returns the count."""
    out_dir = Path(out_dir)
    written = 0
    for index, entry in enumerate(tqdm(suite, desc="generating suite", disable=not progress)):
        first = seed + 1000 * index
        latents = pipeline.latents(
            [entry["prompt"]], images_per_prompt, steps=steps, guidance=guidance,
            sampler=sampler, seed=first,
        )  # fmt: skip
        folder = out_dir / f"{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images_to_pil(pipeline.decode(latents))):
            settings = GenerationSettings(
                entry["prompt"], model_name, sampler, steps, guidance, first + k
            )
            save_png(image, folder / f"{k}.png", settings)
            written += 1
    return written
