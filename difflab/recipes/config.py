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

import dataclasses
import sys
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

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


def _coerce(name: str, value: Any, annotation: Any, source: str) -> Any:
    origin = get_origin(annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{source}: {name} must be a list, got {value!r}.")
        return tuple(value) if origin is tuple or annotation is tuple else list(value)
    allowed = get_args(annotation) or (annotation,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not any(isinstance(value, a) for a in allowed if isinstance(a, type)):
        names = " or ".join(a.__name__ for a in allowed if isinstance(a, type))
        raise TypeError(f"{source}: {name} must be {names}, got {value!r}.")
    return value


def options_from_dict(cls: type, values: dict[str, Any], source: str) -> Any:
    """Build the dataclass ``cls`` from ``values``, refusing unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}. "
            f"Valid keys are: {', '.join(fields)}."
        )
    hints = get_type_hints(cls)
    return cls(**{k: _coerce(k, v, hints[k], source) for k, v in values.items()})
