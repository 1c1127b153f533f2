"""The shapes world: difflab's embedded captioned dataset (its LAION/COCO) and ground truth.

This module is the public face of the world; the pieces live in small modules:

- :mod:`~difflab.data.shapes_geometry` — colours, shapes (normalised SDFs), sizes, backgrounds;
- :mod:`~difflab.data.shapes_scene` — :class:`Scene`, :class:`SceneConfig`, :func:`sample_scene`,
  spatial relations;
- :mod:`~difflab.data.shapes_render` — :func:`render` (analytic anti-aliasing, any resolution)
  and exact annotations (coverages, masks, boxes, depth order);
- :mod:`~difflab.data.shapes_captions` — the caption grammar;
- :mod:`~difflab.data.shapes_views` — derived views (edges, segmentation, scribbles, layouts,
  edit triplets, the personalization subject, clips) and :mod:`~difflab.data.shapes_3d`
  (multi-view renders of solids with camera poses).

Here: :class:`ShapesDataset`, a torch dataset of rendered scenes with captions.

Example::

    rng = np.random.default_rng(0)
    scene = sample_scene(rng, SceneConfig(max_objects=3))
    image = render(scene, 32)                  # [32, 32, 3] in [0, 1]
    text = captions(scene, rng, k=3)            # three distinct true captions
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from difflab.data.shapes_captions import (
    LEVELS,
    RELATION_PROBABILITY,
    RELATION_WORDINGS,
    Phrase,
    all_captions,
    captions,
    list_text,
    phrase_text,
    relation_text,
    scene_phrases,
)
from difflab.data.shapes_geometry import (
    BACKGROUNDS,
    COLOURS,
    PLURALS,
    SHAPE_GEOMETRY,
    SHAPES,
    SIZES,
    check_names,
    srgb_to_lab,
)
from difflab.data.shapes_render import (
    STYLES,
    boxes,
    depth_order,
    masks,
    object_coverages,
    render,
    render_background,
    save_png,
    to_numpy_image,
    to_tensor,
    to_uint8,
    visible_coverages,
)
from difflab.data.shapes_scene import (
    RELATIONS,
    Background,
    Scene,
    SceneConfig,
    ShapeObject,
    absolute_position,
    place_objects,
    relations_between,
    relations_from_boxes,
    sample_scene,
    scene_from_dict,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "LEVELS", "PLURALS", "RELATIONS", "SHAPES", "SHAPE_GEOMETRY", "SIZES", "STYLES",
    "Background", "Phrase", "Scene", "SceneConfig", "ShapeObject", "ShapesDataset",
    "absolute_position", "all_captions", "boxes", "captions", "depth_order", "list_text", "masks",
    "object_coverages", "phrase_text", "place_objects", "relation_text", "relations_between",
    "relations_from_boxes", "render", "render_background", "render_batch", "sample_scene", "save_png",
    "scene_from_dict", "scene_phrases", "scene_rng", "srgb_to_lab", "to_numpy_image", "to_tensor",
    "to_uint8", "visible_coverages",
]  # fmt: skip

SPLITS = {"train": 0, "validation": 1}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``split``: independent streams per (seed, split, index),
    so the train and validation splits never share a scene draw and items don't depend on order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index])


def render_batch(scenes: list[Scene], size: int = 32, style: str = "flat") -> torch.Tensor:
    """Render scenes into one tensor ``[N, 3, size, size]`` in [-1, 1]."""
    return to_tensor(np.stack([render(s, size, style) for s in scenes]))


class ShapesDataset(Dataset):
    """Rendered shapes-world scenes with captions: items are dicts
    ``{"image": [3, H, W] in [-1, 1], "caption": str, "index": int}`` (plus ``"text_embedding"``
    when ``embed_fn`` is given, and ``"scene"`` as a JSON string with ``with_scene``, from which
    :func:`scene_from_dict` rebuilds masks, boxes and every derived view).

    Item ``i`` of a split is a pure function of ``(seed, split, i)`` (see :func:`scene_rng`).
    Captions are drawn by :func:`captions` with ``relation_probability`` and
    ``relation_wording``. ``config.held_out`` pairs never appear in ``"train"``; ``"validation"``
    samples them too unless ``validation_includes_held_out`` is false. With ``embed_fn`` (any ``list[str] -> Tensor``
    callable, e.g. a frozen text encoder) the captions of all items are drawn and embedded once, in
    batches of ``embed_batch_size``, and each item carries its caption's row.
    """

    def __init__(
        self,
        length: int = 10_000,
        size: int = 32,
        split: str = "train",
        config: SceneConfig | None = None,
        seed: int = 0,
        style: str = "flat",
        validation_includes_held_out: bool = True,
        embed_fn: Callable[[list[str]], torch.Tensor] | None = None,
        embed_batch_size: int = 256,
        with_scene: bool = False,
        relation_probability: float = RELATION_PROBABILITY,
        relation_wording: str = "grammar",
    ) -> None:
        scene_rng(seed, split, 0)  # validates split
        check_names("style", style, STYLES)
        check_names("relation wording", relation_wording, RELATION_WORDINGS)
        if not 0.0 <= relation_probability <= 1.0:
            raise ValueError(
                f"relation_probability is the share of relation captions among scenes with a "
                f"clear pair, in [0, 1]; got {relation_probability}"
            )
        self.relation_probability, self.relation_wording = relation_probability, relation_wording
        if length < 1 or size < 4:
            raise ValueError(f"need length >= 1 and size >= 4, got length={length}, size={size}")
        config = config or SceneConfig()
        if split == "validation" and validation_includes_held_out:
            config = replace(config, held_out=frozenset())
        self.length, self.size, self.split, self.config, self.seed, self.style = (
            length,
            size,
            split,
            config,
            seed,
            style,
        )
        self.with_scene = with_scene
        self.text_embeddings: torch.Tensor | None = None
        self._embedding_row: list[int] = []
        if embed_fn is not None:
            texts = [self.scene_and_caption(i)[1] for i in range(length)]
            unique = sorted(set(texts))
            rows = {t: r for r, t in enumerate(unique)}
            chunks = [
                embed_fn(unique[i : i + embed_batch_size])
                for i in range(0, len(unique), embed_batch_size)
            ]
            self.text_embeddings = torch.cat([torch.as_tensor(c) for c in chunks]).detach()
            if self.text_embeddings.shape[0] != len(unique):
                raise ValueError(
                    f"embed_fn returned {self.text_embeddings.shape[0]} rows for {len(unique)} captions; "
                    "it must return one row per input string"
                )
            self._embedding_row = [rows[t] for t in texts]

    def __len__(self) -> int:
        return self.length

    def scene_and_caption(self, index: int) -> tuple[Scene, str]:
        """The scene of item ``index`` and its caption (no rendering)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        rng = scene_rng(self.seed, self.split, index)
        scene = sample_scene(rng, self.config)
        text = captions(scene, rng, 1, self.relation_probability, self.relation_wording)[0]
        return scene, text

    def __getitem__(self, index: int) -> dict:
        scene, caption = self.scene_and_caption(index)
        item = {
            "image": to_tensor(render(scene, self.size, self.style)),
            "caption": caption,
            "index": index,
        }
        if self.text_embeddings is not None:
            item["text_embedding"] = self.text_embeddings[self._embedding_row[index]]
        if self.with_scene:
            item["scene"] = json.dumps(scene.to_dict())
        return item
