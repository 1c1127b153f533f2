"""Scenes of the shapes world: the dataclasses, the configurable sampler and spatial relations.

A :class:`Scene` is pure data (JSON-serialisable): rendering it at any resolution gives the same
picture, so a scene is the ground truth for every view derived from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from difflab.data.shapes_geometry import (
    BACKGROUNDS,
    COLOURS,
    SHAPE_GEOMETRY,
    SHAPES,
    SIZES,
    check_names,
)

TEXTURES = ("plain", "waves", "gradient")
RELATIONS = ("left of", "right of", "above", "below")
# GenEval's position threshold: centres must differ by more than this fraction of the summed box
# dimensions before a relation holds (Ghosh et al. 2023, evaluation/evaluate_images.py).
GENEVAL_POSITION_THRESHOLD = 0.1


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``centre`` is ``(x, y)`` in image fractions (x right, y down), ``rotation`` in
    radians; objects with larger ``depth`` are drawn in front. ``texture`` is ``"plain"`` or
    ``"dots"`` (the personalization subject's pattern)."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]
    rotation: float = 0.0
    depth: int = 0
    texture: str = "plain"

    @property
    def radius(self) -> float:
        """Equivalent radius as a fraction of the image side (area = pi * radius**2)."""
        return SIZES[self.size]

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box ``(x0, y0, x1, y1)`` in image fractions."""
        geometry = SHAPE_GEOMETRY[self.shape]
        if self.rotation % (2 * math.pi) == 0.0:
            hx, hy = geometry.half_extent
        else:
            hx = hy = geometry.bounding_radius
        x, y = self.centre
        return (
            x - hx * self.radius,
            y - hy * self.radius,
            x + hx * self.radius,
            y + hy * self.radius,
        )


@dataclass(frozen=True)
class Background:
    """Background colour name plus a light, resolution-independent texture.

    ``waves`` is a sum of sinusoids with the stored frequencies (cycles per image side), phases
    and directions; ``gradient`` a linear ramp along ``angle``; ``amplitude`` is in [0, 1] units.
    """

    colour: str = "grey"
    texture: str = "plain"
    amplitude: float = 0.0
    frequencies: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()
    angles: tuple[float, ...] = ()


@dataclass(frozen=True)
class Scene:
    """A background and objects; ``objects`` are stored back-to-front (ascending depth)."""

    objects: tuple[ShapeObject, ...]
    background: Background = field(default_factory=Background)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (see :func:`scene_from_dict`)."""
        return asdict(self)


def scene_from_dict(data: dict) -> Scene:
    """Rebuild a :class:`Scene` from :meth:`Scene.to_dict` output (e.g. read from JSON)."""
    objects = tuple(ShapeObject(**{**o, "centre": tuple(o["centre"])}) for o in data["objects"])
    bg = data.get("background", {})
    background = Background(**{k: tuple(v) if isinstance(v, list) else v for k, v in bg.items()})
    return Scene(objects, background)


@dataclass(frozen=True)
class SceneConfig:
    """The sampling distribution of scenes.

    Weights are relative and default to uniform; ``held_out`` lists ``(shape, colour)`` pairs that
    are never sampled (the training split of a compositional-generalisation test).
    ``allow_overlap`` lets objects overlap (their depth order is then annotated); otherwise objects
    keep ``margin`` (image fractions) between their boxes and from the border.
    """

    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    shape_weights: tuple[float, ...] | None = None
    colour_weights: tuple[float, ...] | None = None
    size_weights: tuple[float, ...] | None = None
    count_weights: tuple[float, ...] | None = None
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    texture_probability: float = 0.5
    texture_amplitude: float = 0.035
    held_out: frozenset[tuple[str, str]] = frozenset()
    allow_overlap: bool = False
    rotate: bool = False
    margin: float = 0.06

    def __post_init__(self) -> None:
        check_names("shape", self.shapes, SHAPES)
        check_names("colour", self.colours, tuple(COLOURS))
        check_names("size", self.sizes, tuple(SIZES))
        check_names("background", self.backgrounds, tuple(BACKGROUNDS))
        for shape, colour in self.held_out:
            check_names("shape", shape, SHAPES)
            check_names("colour", colour, tuple(COLOURS))
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 9, got {self.min_objects}..{self.max_objects}"
            )
        for name, weights, items in (
            ("shape_weights", self.shape_weights, self.shapes),
            ("colour_weights", self.colour_weights, self.colours),
            ("size_weights", self.size_weights, self.sizes),
            ("count_weights", self.count_weights, range(self.min_objects, self.max_objects + 1)),
        ):
            if weights is not None and (
                len(weights) != len(items) or min(weights) < 0 or sum(weights) <= 0
            ):
                raise ValueError(
                    f"{name} needs {len(items)} non-negative weights (one per option), got {weights}"
                )
        if all((s, c) in self.held_out for s in self.shapes for c in self.colours):
            raise ValueError(
                "held_out removes every (shape, colour) pair; nothing is left to sample"
            )


def _probabilities(weights: tuple[float, ...] | None) -> np.ndarray | None:
    if weights is None:
        return None
    p = np.asarray(weights, dtype=np.float64)
    return p / p.sum()


def sample_background(rng: np.random.Generator, config: SceneConfig) -> Background:
    """Draw a background colour and (with ``config.texture_probability``) a light texture."""
    colour = config.backgrounds[rng.integers(len(config.backgrounds))]
    if rng.random() >= config.texture_probability:
        return Background(colour)
    if rng.random() < 0.5:
        return Background(
            colour, "gradient", config.texture_amplitude, angles=(float(rng.uniform(0, 2 * np.pi)),)
        )
    k = 3
    return Background(
        colour,
        "waves",
        config.texture_amplitude,
        frequencies=tuple(float(f) for f in rng.uniform(1.0, 4.0, k)),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, k)),
        angles=tuple(float(a) for a in rng.uniform(0, np.pi, k)),
    )


def sample_attributes(rng: np.random.Generator, config: SceneConfig) -> tuple[str, str, str]:
    """Draw one ``(shape, colour, size)`` from the configured distribution, avoiding held-out pairs."""
    for _ in range(1000):
        shape = config.shapes[
            rng.choice(len(config.shapes), p=_probabilities(config.shape_weights))
        ]
        colour = config.colours[
            rng.choice(len(config.colours), p=_probabilities(config.colour_weights))
        ]
        if (shape, colour) not in config.held_out:
            size = config.sizes[
                rng.choice(len(config.sizes), p=_probabilities(config.size_weights))
            ]
            return shape, colour, size
    raise RuntimeError("could not draw an attribute combination outside held_out; loosen held_out")


def box_fits(box: tuple[float, ...], placed: list[tuple[float, ...]], margin: float) -> bool:
    """Whether ``box`` lies ``margin`` inside the image and ``margin`` away from every placed box."""
    x0, y0, x1, y1 = box
    if x0 < margin or y0 < margin or x1 > 1 - margin or y1 > 1 - margin:
        return False
    return all(
        x0 >= b[2] + margin or b[0] >= x1 + margin or y0 >= b[3] + margin or b[1] >= y1 + margin
        for b in placed
    )


def place_objects(
    rng: np.random.Generator,
    attributes: list[tuple[str, str, str]],
    config: SceneConfig,
    tries: int = 200,
) -> tuple[ShapeObject, ...] | None:
    """Place objects with the given ``(shape, colour, size)`` at random; ``None`` if they don't fit.

    Without ``config.allow_overlap`` boxes keep ``config.margin`` apart; depth is a random order.
    """
    placed: list[ShapeObject] = []
    boxes = np.zeros((0, 4))
    depths = rng.permutation(len(attributes))
    m = config.margin
    for (shape, colour, size), depth in zip(attributes, depths, strict=True):
        rotation = float(rng.uniform(0, 2 * np.pi)) if config.rotate else 0.0
        probe = ShapeObject(shape, colour, size, (0.0, 0.0), rotation, int(depth))
        extent = np.asarray(probe.box())
        lo, hi = m - extent[:2], 1 - m - extent[2:]
        if (lo > hi).any():
            return None
        centres = lo + rng.random((tries, 2)) * (hi - lo)  # all candidates at once
        candidates = np.concatenate([centres, centres], axis=1) + extent  # [tries, 4]
        if config.allow_overlap or not len(boxes):
            ok = np.ones(tries, dtype=bool)
        else:
            c, b = candidates[:, None, :], boxes[None, :, :]
            apart = (
                (c[..., 0] >= b[..., 2] + m)
                | (b[..., 0] >= c[..., 2] + m)
                | (c[..., 1] >= b[..., 3] + m)
                | (b[..., 1] >= c[..., 3] + m)
            )
            ok = apart.all(axis=1)
        if not ok.any():
            return None
        first = int(np.argmax(ok))
        placed.append(replace(probe, centre=(float(centres[first, 0]), float(centres[first, 1]))))
        boxes = np.concatenate([boxes, candidates[first : first + 1]])
    return tuple(sorted(placed, key=lambda o: o.depth))


def sample_scene(rng: np.random.Generator, config: SceneConfig | None = None) -> Scene:
    """Draw a random scene from ``config`` (default :class:`SceneConfig`) using only ``rng``.

    The number of objects follows ``config.count_weights`` exactly; if the drawn objects do not fit
    without overlap their attributes are redrawn, so crowded scenes lean towards small objects.
    """
    config = config or SceneConfig()
    counts = np.arange(config.min_objects, config.max_objects + 1)
    background = sample_background(rng, config)
    n = int(counts[rng.choice(len(counts), p=_probabilities(config.count_weights))])
    for _ in range(100):
        attributes = [sample_attributes(rng, config) for _ in range(n)]
        objects = place_objects(rng, attributes, config)
        if objects is not None:
            return Scene(objects, background)
    raise RuntimeError("could not place the objects of a scene; lower max_objects or margin")


def relations_between(
    a: ShapeObject, b: ShapeObject, threshold: float = GENEVAL_POSITION_THRESHOLD
) -> set[str]:
    """Relations (from :data:`RELATIONS`) that hold for ``a`` relative to ``b``.

    Follows GenEval (Ghosh et al. 2023): the centre offset must exceed ``threshold`` times the
    summed box width (height) before "left of"/"right of" ("above"/"below") holds.
    """
    return relations_from_boxes(a.box(), b.box(), threshold)


def relations_from_boxes(
    box_a: tuple[float, ...],
    box_b: tuple[float, ...],
    threshold: float = GENEVAL_POSITION_THRESHOLD,
) -> set[str]:
    """:func:`relations_between` for two ``(x0, y0, x1, y1)`` boxes (used by the detector too)."""
    ax, ay = (box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2
    bx, by = (box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2
    width = (box_a[2] - box_a[0]) + (box_b[2] - box_b[0])
    height = (box_a[3] - box_a[1]) + (box_b[3] - box_b[1])
    found = set()
    if abs(ax - bx) > threshold * width:
        found.add("left of" if ax < bx else "right of")
    if abs(ay - by) > threshold * height:
        found.add("above" if ay < by else "below")
    return found


def absolute_position(obj: ShapeObject) -> str | None:
    """ "left", "right", "top", "bottom" or "middle" when the centre is clearly in that region."""
    x, y = obj.centre
    horizontal = "left" if x < 0.33 else "right" if x > 0.67 else None
    vertical = "top" if y < 0.33 else "bottom" if y > 0.67 else None
    if horizontal and not vertical and 0.4 < y < 0.6:
        return horizontal
    if vertical and not horizontal and 0.4 < x < 0.6:
        return vertical
    if not horizontal and not vertical and 0.42 < x < 0.58 and 0.42 < y < 0.58:
        return "middle"
    return None
