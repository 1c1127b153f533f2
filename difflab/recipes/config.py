"""Recipe files: small TOML files naming a recipe kind, its options and the Trainer's config.

    kind = "vae"                 # which builder of difflab.recipes runs it
    [recipe]                     # the builder's own options (its dataclass fields)
    kl_weight = 1e-6
    [train]                      # difflab.train.TrainConfig fields
    max_steps = 3000

Unknown keys anywhere are refused with the list of valid ones, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_LEVEL_KEYS = ("kind", "recipe", "train")


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Parse a recipe TOML file and check its top-level layout."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(TOP_LEVEL_KEYS)}."
        )
    if "kind" not in data:
        raise ValueError(f'{path}: missing `kind = "..."` naming the recipe builder.')
    return data
