"""Recipe files: small TOML files naming a recipe kind, its options and the Trainer's config.

    kind = "vae"                 # which builder of difflab.recipes runs it
    [recipe]                     # the builder's own options (its dataclass fields)
    kl_weight = 1e-6
    [train]                      # difflab.train.TrainConfig fields
    max_steps = 3000

A variant of another recipe names it and lists only what differs:

    extends = "distill-lcm"      # a shipped recipe, or "other.toml" next to this file
    [recipe]
    teacher = "shapes-t2i"       # every other [recipe] and [train] key is distill-lcm's

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

CONFIG_DIR = Path(__file__).parent / "configs"
TOP_LEVEL_KEYS = ("kind", "extends", "recipe", "train")
TABLES = ("recipe", "train")


def list_recipes() -> dict[str, Path]:
    """Shipped recipe names and their files."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a shipped recipe name, or ``name_or_path`` itself if it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipes = list_recipes()
    if str(name_or_path) in recipes:
        return recipes[str(name_or_path)]
    raise FileNotFoundError(
        f"no recipe file or shipped recipe named {str(name_or_path)!r}; shipped recipes: "
        f"{', '.join(recipes)}. Pass a .toml file to train your own."
    )


def extended_path(value: Any, including: Path) -> Path:
    """The file ``extends = value`` in ``including`` names: a ``.toml`` path relative to the
    including file's folder, or else a shipped recipe name."""
    if not isinstance(value, str) or not value:
        raise ValueError(f'{including}: extends must name a recipe, e.g. extends = "distill-lcm".')
    if value.endswith(".toml"):
        path = including.parent / value
        if not path.is_file():
            raise FileNotFoundError(f"{including}: extends {value!r}, but {path} does not exist.")
        return path
    recipes = list_recipes()
    if value not in recipes:
        raise FileNotFoundError(
            f"{including}: extends {value!r}, which is no shipped recipe (they are: "
            f'{", ".join(recipes)}); name a file as "NAME.toml" next to {including.name}.'
        )
    return recipes[value]


def read_recipe_file(path: str | Path, *, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse a recipe TOML file, check its top-level layout and resolve ``extends``: the result
    holds ``kind`` and the merged ``recipe`` and ``train`` tables (this file's keys win)."""
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
    if "extends" in data:
        data = extend(data, path, _including)
    if "kind" not in data:
        raise ValueError(f'{path}: missing `kind = "..."` naming the recipe builder.')
    return data


def extend(data: dict[str, Any], path: Path, including: tuple[Path, ...]) -> dict[str, Any]:
    """``data`` (the file ``path``) laid over the recipe it extends, table by table."""
    parent_path = extended_path(data["extends"], path)
    chain = (*including, path.resolve())
    if parent_path.resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, parent_path))
        raise ValueError(f"{path}: recipes extend each other in a loop: {names}.")
    parent = read_recipe_file(parent_path, _including=chain)
    if data.get("kind", parent["kind"]) != parent["kind"]:
        raise ValueError(
            f"{path}: kind {data['kind']!r} differs from the kind {parent['kind']!r} of the "
            f"recipe it extends ({parent_path.name}); a recipe extends only one of its own kind."
        )
    merged = {"kind": parent["kind"]}
    for table in TABLES:
        values = {**parent.get(table, {}), **data.get(table, {})}
        if values:
            merged[table] = values
    return merged


def recipe_as_toml(data: dict[str, Any]) -> str:
    """A resolved recipe (``read_recipe_file``'s result) written back as one TOML file with no
    ``extends``: what ``difflab recipes --show NAME`` prints. Written by hand because the
    standard library reads TOML but does not write it; JSON's scalars and lists are TOML's."""
    import json

    lines = [f"kind = {json.dumps(data['kind'])}"]
    for table in TABLES:
        if data.get(table):
            lines += ["", f"[{table}]"]
            lines += [f"{key} = {json.dumps(value)}" for key, value in data[table].items()]
    return "\n".join(lines) + "\n"
