"""Views derived from a scene, for the methods built on the shapes world.

- control maps (ControlNet, Zhang et al. 2023): :func:`edge_map`, :func:`segmentation_map`
  (+ :func:`segmentation_image`), :func:`depth_map`, :func:`scribble_map`;
- grounding boxes (GLIGEN, Li et al. 2023): :func:`box_layout`, :func:`layout_image`;
- instruction edits (InstructPix2Pix, Brooks et al. 2023): :func:`edit_triplet`;
- a personalization subject (DreamBooth, Ruiz et al. 2023): :data:`SUBJECT`,
  :func:`subject_scene` (render it with any of the styles in ``shapes_render.STYLES``);
- short clips of moving objects: :func:`moving_clip`, :func:`render_clip`.

All maps are numpy arrays of the image size; every random choice comes from the ``rng`` passed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from difflab.data.shapes_captions import LEVELS, Phrase, phrase_text
from difflab.data.shapes_geometry import COLOURS, SHAPE_GEOMETRY, SHAPES
from difflab.data.shapes_render import pixel_centres, render, visible_coverages
from difflab.data.shapes_scene import (
    Scene,
    SceneConfig,
    ShapeObject,
    box_fits,
    sample_attributes,
    sample_scene,
)

SEGMENTATION_KINDS = ("instance", "shape", "colour")


# ---- control maps ------------------------------------------------------------------------------


def edge_map(scene: Scene, size: int) -> np.ndarray:
    """Object outlines ``[H, W]`` float32 in [0, 1]: the gradient magnitude of each object's
    visible coverage (exact, anti-aliased, about two pixels wide; occluded edges are hidden)."""
    edges = np.zeros((size, size), dtype=np.float32)
    for coverage in visible_coverages(scene, size):
        gy, gx = np.gradient(coverage)
        edges += np.hypot(gx, gy)
    return np.clip(2.0 * edges, 0.0, 1.0)


def segmentation_map(scene: Scene, size: int, by: str = "instance") -> np.ndarray:
    """Label map ``[H, W]`` int64: 0 is background; otherwise ``by="instance"`` gives the object's
    index + 1, ``"shape"`` the index in ``SHAPES`` + 1, ``"colour"`` the index in ``COLOURS`` + 1.
    A pixel belongs to the object covering most of it, if that is at least half."""
    if by not in SEGMENTATION_KINDS:
        raise ValueError(
            f"unknown segmentation kind {by!r}; valid kinds are: {', '.join(SEGMENTATION_KINDS)}"
        )
    if not scene.objects:
        return np.zeros((size, size), dtype=np.int64)
    coverage = visible_coverages(scene, size)
    owner = coverage.argmax(axis=0)
    labels = {
        "instance": np.arange(1, len(scene.objects) + 1),
        "shape": np.array([SHAPES.index(o.shape) + 1 for o in scene.objects]),
        "colour": np.array([list(COLOURS).index(o.colour) + 1 for o in scene.objects]),
    }[by]
    return np.where(coverage.max(axis=0) >= 0.5, labels[owner], 0).astype(np.int64)


def depth_map(scene: Scene, size: int) -> np.ndarray:
    """Layered depth ``[H, W]`` float32 in [0, 1]: background 0, the object in front of a pixel
    ``(rank + 1) / N`` with rank its position in the back-to-front order (nearer is brighter),
    blended by visible coverage so edges stay anti-aliased."""
    out = np.zeros((size, size), dtype=np.float32)
    n = len(scene.objects)
    for rank, coverage in enumerate(
        visible_coverages(scene, size)
    ):  # objects are stored back to front
        out += coverage * (rank + 1) / n
    return out


def segmentation_image(labels: np.ndarray) -> np.ndarray:
    """Colour a label map for viewing or as an RGB control image: ``[H, W, 3]`` in [0, 1]; label
    0 is black and each other label gets a fixed distinct hue."""
    hues = (np.arange(labels.max() + 1) * 0.618034) % 1.0
    rgb = np.stack(
        [np.clip(np.abs(((hues * 6 + k) % 6) - 3) - 1, 0, 1) for k in (0, 4, 2)], axis=-1
    )
    rgb[0] = 0.0
    return rgb[labels].astype(np.float32)


def _outline_points(obj: ShapeObject, n: int = 48) -> np.ndarray:
    """``n`` points on the outer outline (image fractions), by marching rays from the centroid."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = np.linspace(0, 1.3 * SHAPE_GEOMETRY[obj.shape].bounding_radius, 96)
    x = np.cos(angles)[:, None] * radii[None]
    y = np.sin(angles)[:, None] * radii[None]
    if obj.rotation:
        c, s = np.cos(obj.rotation), np.sin(obj.rotation)
        x, y = c * x + s * y, -s * x + c * y
    inside = SHAPE_GEOMETRY[obj.shape].sdf(x, y) < 0
    last = np.where(inside.any(axis=1), inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    r = radii[last] * obj.radius
    return np.stack(
        [obj.centre[0] + r * np.cos(angles), obj.centre[1] + r * np.sin(angles)], axis=1
    )


def polyline_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from points ``(x, y)`` to the open polyline through ``points`` ``[K, 2]``."""
    a, b = points[:-1, :, None], points[1:, :, None]
    px, py = x.reshape(1, -1), y.reshape(1, -1)
    ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    t = np.clip(
        ((px - a[:, 0]) * ex + (py - a[:, 1]) * ey) / np.maximum(ex * ex + ey * ey, 1e-12), 0, 1
    )
    dx, dy = px - a[:, 0] - t * ex, py - a[:, 1] - t * ey
    return np.sqrt((dx * dx + dy * dy).min(axis=0)).reshape(x.shape)


def scribble_map(
    scene: Scene, size: int, rng: np.random.Generator, jitter: float = 0.12, width_px: float = 1.0
) -> np.ndarray:
    """Hand-drawn-looking strokes ``[H, W]`` float32 in [0, 1]: each object's outline, wobbled by
    ``jitter`` (fraction of its radius), started at a random angle and left slightly unclosed."""
    grid = pixel_centres(size)
    x, y = np.meshgrid(grid, grid)
    strokes = np.zeros((size, size), dtype=np.float32)
    for obj in scene.objects:
        points = np.roll(_outline_points(obj), int(rng.integers(48)), axis=0)
        wobble = np.cumsum(rng.normal(0, 1, points.shape), axis=0)
        wobble = (wobble - wobble.mean(axis=0)) / max(np.abs(wobble).max(), 1e-9)
        points = points + wobble * jitter * obj.radius
        points = points[: int(len(points) * rng.uniform(0.85, 0.97))]
        distance = polyline_distance(x, y, points) * size
        strokes = np.maximum(strokes, np.clip(0.5 + width_px / 2 - distance, 0, 1))
    return strokes


# ---- grounding boxes -----------------------------------------------------------------------------


def box_layout(scene: Scene) -> list[dict]:
    """GLIGEN-style grounding: ``[{"phrase": "a red circle", "box": [x0, y0, x1, y1]}, ...]`` with
    boxes in image fractions, back to front."""
    return [
        {"phrase": phrase_text(Phrase(o.shape, 1, o.colour)), "box": [float(v) for v in o.box()]}
        for o in scene.objects
    ]


def layout_image(scene: Scene, size: int, width_px: float = 1.0) -> np.ndarray:
    """The box layout drawn as outlines in each object's colour on mid grey (so that black and white
    boxes both show), ``[H, W, 3]`` in [0, 1]."""
    grid = pixel_centres(size)
    image = np.full((size, size, 3), 0.5, dtype=np.float32)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box()
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        qx, qy = np.abs(grid[None, :] - cx) - hx, np.abs(grid[:, None] - cy) - hy
        sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
        alpha = np.clip(0.5 + width_px / 2 - np.abs(sdf) * size, 0, 1)[..., None]
        image = image * (1 - alpha) + np.asarray(COLOURS[obj.colour], dtype=np.float32) * alpha
    return image


# ---- instruction edits ---------------------------------------------------------------------------

EDIT_KINDS = ("recolour", "add", "remove", "reshape", "move")
_MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class EditTriplet:
    """An instruction edit: ``before`` --``instruction``--> ``after`` (both full scenes)."""

    before: Scene
    instruction: str
    after: Scene
    kind: str


def referring_phrase(scene: Scene, index: int) -> str | None:
    """The shortest "the ..." phrase naming only object ``index`` ("the circle", "the red circle",
    "the small red circle"), or ``None`` if no level of detail singles it out."""
    obj = scene.objects[index]
    for level in LEVELS:
        key = tuple(getattr(obj, a) for a in level)
        if sum(tuple(getattr(o, a) for a in level) == key for o in scene.objects) == 1:
            return "the " + " ".join(key)
    return None


def _fits_in(scene: Scene, obj: ShapeObject, skip: int | None, margin: float) -> bool:
    others = [o.box() for i, o in enumerate(scene.objects) if i != skip]
    return box_fits(obj.box(), others, margin)


def edit_triplet(
    rng: np.random.Generator,
    scene: Scene | None = None,
    kind: str | None = None,
    config: SceneConfig | None = None,
) -> EditTriplet:
    """Draw an edit of ``scene`` (default: a fresh scene from ``config``): recolour ("make the circle
    blue"), add ("add a green square"), remove ("remove the triangle"), reshape ("turn the star into a
    heart") or move ("move the ring to the left"). ``kind`` forces one; impossible edits (nothing to
    remove, no room to add) are redrawn on a new scene."""
    config = config or SceneConfig()
    if kind is not None and kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; valid kinds are: {', '.join(EDIT_KINDS)}")
    for _ in range(200):
        before = scene if scene is not None else sample_scene(rng, config)
        chosen = kind or EDIT_KINDS[rng.integers(len(EDIT_KINDS))]
        result = _try_edit(rng, before, chosen, config)
        if result is not None:
            return result
        scene = None  # the given scene cannot take this edit; use fresh ones
    raise RuntimeError(f"could not draw a {kind or 'any'} edit; loosen the scene config")


def _try_edit(
    rng: np.random.Generator, before: Scene, kind: str, config: SceneConfig
) -> EditTriplet | None:
    objects = list(before.objects)
    if kind == "add":
        if len(objects) >= config.max_objects:
            return None
        shape, colour, size = sample_attributes(rng, config)
        for _ in range(100):
            new = ShapeObject(
                shape,
                colour,
                size,
                (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
                depth=len(objects),
            )
            if _fits_in(before, new, None, config.margin):
                article = phrase_text(Phrase(shape, 1, colour))
                return EditTriplet(
                    before, f"add {article}", Scene((*objects, new), before.background), kind
                )
        return None
    index = int(rng.integers(len(objects)))
    ref = referring_phrase(before, index)
    if ref is None:
        return None
    obj = objects[index]
    if kind == "remove":
        if len(objects) < 2:
            return None
        verb = ("remove", "delete", "take away")[rng.integers(3)]
        return EditTriplet(
            before,
            f"{verb} {ref}",
            Scene(tuple(objects[:index] + objects[index + 1 :]), before.background),
            kind,
        )
    if kind == "recolour":
        colour = str(rng.choice([c for c in config.colours if c != obj.colour]))
        objects[index] = replace(obj, colour=colour)
        template = ("make {ref} {c}", "turn {ref} {c}", "change the colour of {ref} to {c}")[
            rng.integers(3)
        ]
        return EditTriplet(
            before,
            template.format(ref=ref, c=colour),
            Scene(tuple(objects), before.background),
            kind,
        )
    if kind == "reshape":
        shape = str(rng.choice([s for s in config.shapes if s != obj.shape]))
        new = replace(obj, shape=shape)
        if not _fits_in(before, new, index, config.margin):
            return None
        objects[index] = new
        return EditTriplet(
            before,
            f"turn {ref} into {phrase_text(Phrase(shape))}",
            Scene(tuple(objects), before.background),
            kind,
        )
    direction = str(rng.choice(list(_MOVES)))
    step = float(rng.uniform(0.15, 0.3))
    dx, dy = _MOVES[direction]
    new = replace(obj, centre=(obj.centre[0] + dx * step, obj.centre[1] + dy * step))
    if not _fits_in(before, new, index, config.margin):
        return None
    objects[index] = new
    words = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
    return EditTriplet(
        before, f"move {ref} {words[direction]}", Scene(tuple(objects), before.background), kind
    )


# ---- the personalization subject -----------------------------------------------------------------

# A purple heart with yellow dots: a subject no caption of the world describes, so a model must
# learn it from a handful of pictures (DreamBooth, textual inversion).
SUBJECT = ShapeObject("heart", "purple", "large", (0.5, 0.5), texture="dots")
SUBJECT_CLASS_PHRASE = "a heart"


def subject_scene(
    rng: np.random.Generator, config: SceneConfig | None = None, max_others: int = 2
) -> Scene:
    """A scene holding :data:`SUBJECT` at a random place (size drawn from ``config``) with up to
    ``max_others`` ordinary objects around it."""
    config = config or SceneConfig()
    others = sample_scene(rng, replace(config, min_objects=1, max_objects=max(1, max_others)))
    for _ in range(200):
        size = str(rng.choice(config.sizes))
        subject = replace(
            SUBJECT, size=size, centre=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
        )
        kept = [o for o in others.objects if box_fits(o.box(), [subject.box()], config.margin)][
            :max_others
        ]
        if box_fits(subject.box(), [], config.margin):
            return Scene((*kept, replace(subject, depth=len(kept))), others.background)
    raise RuntimeError("could not place the subject")


# ---- clips of moving objects ---------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A clip: one scene per frame (objects move at constant ``velocities``, image fractions per
    frame) and a caption such as "a red circle moving to the right and a blue square moving up"."""

    frames: tuple[Scene, ...]
    velocities: tuple[tuple[float, float], ...]
    caption: str


def moving_clip(
    rng: np.random.Generator,
    num_frames: int = 8,
    config: SceneConfig | None = None,
    speed: tuple[float, float] = (0.02, 0.05),
) -> Clip:
    """Objects that each move left, right, up or down (or stay still) at a constant speed, staying
    inside the image for the whole clip; objects may pass over one another (depth is annotated)."""
    config = config or SceneConfig(max_objects=2)
    names = ("still", *_MOVES)
    for _ in range(200):
        scene = sample_scene(rng, config)
        velocities, moved = [], []
        for _ in scene.objects:
            direction = names[rng.integers(len(names))]
            unit = _MOVES.get(direction, (0, 0))
            v = float(rng.uniform(*speed))
            velocities.append((unit[0] * v, unit[1] * v))
            moved.append(direction)
        last = [
            replace(
                o, centre=(o.centre[0] + vx * (num_frames - 1), o.centre[1] + vy * (num_frames - 1))
            )
            for o, (vx, vy) in zip(scene.objects, velocities, strict=True)
        ]
        if all(box_fits(o.box(), [], 0.0) for o in last):
            break
    else:
        raise RuntimeError("could not draw a clip that stays inside the image")
    frames = tuple(
        Scene(
            tuple(
                replace(o, centre=(o.centre[0] + vx * t, o.centre[1] + vy * t))
                for o, (vx, vy) in zip(scene.objects, velocities, strict=True)
            ),
            scene.background,
        )
        for t in range(num_frames)
    )
    words = {
        "still": "standing still",
        "left": "moving to the left",
        "right": "moving to the right",
        "up": "moving up",
        "down": "moving down",
    }
    parts = [
        f"{phrase_text(Phrase(o.shape, 1, o.colour))} {words[m]}"
        for o, m in zip(scene.objects, moved, strict=True)
    ]
    caption = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return Clip(frames, tuple(velocities), caption)


def render_clip(clip: Clip, size: int = 32, style: str = "flat") -> np.ndarray:
    """Frames of a clip, ``[T, H, W, 3]`` float32 in [0, 1]."""
    return np.stack([render(frame, size, style) for frame in clip.frames])
