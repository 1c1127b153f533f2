"""Training recipes: ``difflab train NAME_OR_FILE --out DIR``.

A recipe is a small TOML file (shipped ones live in ``difflab/recipes/configs/``) naming a
``kind`` — a builder module that makes the model, data and objective and calls the one Trainer
(:func:`difflab.train.train`) — plus that builder's options and the Trainer's config.
"""

from __future__ import annotations

import json
from pathlib import Path

from difflab.recipes.config import CONFIG_DIR, list_recipes, read_recipe_file, recipe_path
from difflab.typed_config import from_dict

__all__ = ["CONFIG_DIR", "list_recipes", "load_recipe", "recipe_path", "run_recipe"]


def _kinds() -> dict:
    from difflab.recipes import (
        clip,
        distill,
        features,
        pixel,
        super_resolution,
        text_to_image,
        unclip,
        vae,
    )

    return {
        "vae": (vae.VAERecipe, vae.run),
        "pixel": (pixel.PixelRecipe, pixel.run),
        "text_to_image": (text_to_image.TextToImageRecipe, text_to_image.run),
        "features": (features.FeaturesRecipe, features.run),
        "clip": (clip.CLIPRecipe, clip.run),
        "progressive": (distill.ProgressiveRecipe, distill.run_progressive),
        "consistency": (distill.ConsistencyRecipe, distill.run_consistency),
        "lcm_lora": (distill.LCMLoRARecipe, distill.run_lcm_lora),
        "super_resolution": (super_resolution.SuperResolutionRecipe, super_resolution.run),
        "unclip_decoder": (unclip.UnCLIPDecoderRecipe, unclip.run_decoder),
        "unclip_prior": (unclip.UnCLIPPriorRecipe, unclip.run_prior),
    }


def load_recipe(name_or_path: str | Path, **train_overrides):
    """Parse and validate a recipe: returns (kind, options dataclass, TrainConfig, run fn)."""
    from difflab.train import TrainConfig

    path = recipe_path(name_or_path)
    data = read_recipe_file(path)
    kinds = _kinds()
    if data["kind"] not in kinds:
        raise ValueError(
            f"{path}: unknown recipe kind {data['kind']!r}; kinds are: {', '.join(kinds)}."
        )
    options_cls, run = kinds[data["kind"]]
    options = from_dict(options_cls, data.get("recipe", {}), f"{path} [recipe]")
    train_values = {**data.get("train", {}), **train_overrides}
    config = TrainConfig.from_dict(train_values, source=f"{path} [train]")
    return data["kind"], options, config, run


def run_recipe(
    name_or_path: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    **train_overrides,
) -> dict:
    """Train a recipe into ``out``; writes and returns the figures (``out/results.json``).
    The same recipe and seed give the same weights (on the same machine and software)."""
    from difflab.train import seeded_weights

    kind, options, config, run = load_recipe(name_or_path, **train_overrides)
    out = Path(out)
    with seeded_weights(config.seed):  # and whatever else is drawn before the Trainer seeds
        figures = run(options, config, out, resume, overwrite)
    figures = {"recipe": str(name_or_path), "kind": kind, **figures}
    (out / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
