"""Rendering scenes to pixels, with analytic anti-aliasing, and their exact per-object annotations.

Arrays here are numpy ``[H, W, 3]`` float32 in [0, 1] (the "PIL edge" of the pipeline);
:func:`to_tensor` converts to the library convention (``[3, H, W]`` in [-1, 1]). Each object is
evaluated only on the pixels of its bounding box, so a 32 px scene costs well under a millisecond.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from difflab.data.shapes_geometry import BACKGROUNDS, COLOURS, check_names, placed_sdf
from difflab.data.shapes_scene import Scene, ShapeObject

STYLES = ("flat", "outlined", "striped", "pastel")
SUBJECT_DOT_COLOUR = (1.0, 0.93, 0.10)


@lru_cache(maxsize=16)
def pixel_centres(size: int) -> np.ndarray:
    """Pixel centres in image fractions: ``(i + 0.5) / size`` for ``i`` in ``range(size)``."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    centres.setflags(write=False)  # shared by every caller through the cache
    return centres


def _pixel_window(obj: ShapeObject, size: int, pad_px: float = 1.5) -> tuple[slice, slice]:
    x0, y0, x1, y1 = obj.box()
    c0 = max(int(np.floor(x0 * size - pad_px)), 0)
    c1 = min(int(np.ceil(x1 * size + pad_px)), size)
    r0 = max(int(np.floor(y0 * size - pad_px)), 0)
    r1 = min(int(np.ceil(y1 * size + pad_px)), size)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def object_sdf(obj: ShapeObject, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Signed distance (image fractions) from the grid ``xs`` (columns) x ``ys`` (rows) to ``obj``."""
    return placed_sdf(obj.shape, xs, ys, obj.centre, obj.radius, obj.rotation)


def _local_coords(
    obj: ShapeObject, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    lx, ly = np.broadcast_arrays(
        (xs[None, :] - obj.centre[0]) / obj.radius, (ys[:, None] - obj.centre[1]) / obj.radius
    )
    return lx, ly


def coverage_from_sdf(sdf: np.ndarray, size: int) -> np.ndarray:
    """Analytic anti-aliasing: the fraction of a pixel covered, ``clip(0.5 - sdf_px, 0, 1)``."""
    return np.clip(0.5 - sdf * size, 0.0, 1.0)


def object_coverages(scene: Scene, size: int) -> np.ndarray:
    """Per-object coverage ``[N, H, W]`` in [0, 1], ignoring occlusion (the full silhouettes)."""
    out = np.zeros((len(scene.objects), size, size), dtype=np.float32)
    grid = pixel_centres(size)
    for i, obj in enumerate(scene.objects):
        rows, cols = _pixel_window(obj, size)
        out[i, rows, cols] = coverage_from_sdf(object_sdf(obj, grid[cols], grid[rows]), size)
    return out


def visible_coverages(scene: Scene, size: int) -> np.ndarray:
    """Per-object *visible* coverage ``[N, H, W]``: each silhouette times what is in front of it."""
    full = object_coverages(scene, size)
    visible = full.copy()
    in_front = np.zeros((size, size), dtype=np.float32)
    for i in range(len(scene.objects) - 1, -1, -1):  # objects are stored back to front
        visible[i] *= 1.0 - in_front
        in_front = in_front + full[i] * (1.0 - in_front)
    return visible


def masks(scene: Scene, size: int, visible: bool = True) -> np.ndarray:
    """Boolean per-object masks ``[N, H, W]`` (pixels at least half covered)."""
    coverage = visible_coverages(scene, size) if visible else object_coverages(scene, size)
    return coverage >= 0.5


def boxes(scene: Scene, size: int | None = None) -> np.ndarray:
    """Exact object boxes ``[N, 4]`` as ``(x0, y0, x1, y1)``; image fractions, or pixels if ``size``."""
    out = np.array([o.box() for o in scene.objects], dtype=np.float64).reshape(-1, 4)
    return out * size if size else out


def depth_order(scene: Scene) -> list[int]:
    """Object indices from back to front (the drawing order)."""
    return sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].depth)


def render_background(scene: Scene, size: int) -> np.ndarray:
    """The background alone, ``[H, W, 3]`` float32 in [0, 1]."""
    bg = scene.background
    check_names("background", bg.colour, tuple(BACKGROUNDS))
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = BACKGROUNDS[bg.colour]
    if bg.texture == "plain" or bg.amplitude == 0:
        return image
    grid = pixel_centres(size)
    x, y = grid[None, :], grid[:, None]
    if bg.texture == "gradient":
        a = bg.angles[0]
        ramp = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)
        pattern = ramp * 2.0 * bg.amplitude
    elif bg.texture == "waves":
        pattern = np.zeros((size, size))
        for f, p, a in zip(bg.frequencies, bg.phases, bg.angles, strict=True):
            pattern = pattern + np.sin(2 * np.pi * f * (x * np.cos(a) + y * np.sin(a)) + p)
        pattern *= bg.amplitude / max(len(bg.frequencies), 1)
    else:
        raise ValueError(
            f"unknown background texture {bg.texture!r}; valid: plain, waves, gradient"
        )
    image += pattern[..., None].astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def _fill(
    obj: ShapeObject,
    coverage: np.ndarray,
    sdf: np.ndarray,
    rows: slice,
    cols: slice,
    size: int,
    style: str,
):
    """Return ``(colour [h, w, 3] or [3], alpha [h, w])`` for one object in ``style``."""
    colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
    alpha = coverage
    if style == "pastel":
        colour = 0.45 * colour + 0.55
    elif style == "outlined":
        width = max(1.2 / size, 0.12 * obj.radius)  # at least ~one pixel
        alpha = np.clip(0.5 - (np.abs(sdf + width / 2) - width / 2) * size, 0.0, 1.0)
    elif style == "striped":
        grid = pixel_centres(size)
        lx, ly = _local_coords(obj, grid[cols], grid[rows])
        stripes = (np.floor((lx + ly) * 2.0) % 2 == 0)[..., None]
        colour = np.where(stripes, colour, 0.5 * colour + 0.5)
    if obj.texture == "dots":
        grid = pixel_centres(size)
        lx, ly = _local_coords(obj, grid[cols], grid[rows])
        # A hexagonal lattice of dots, radius 0.17 equivalent radii: the subject's signature.
        u, v = lx / 0.5, ly / 0.433
        row = np.round(v)
        du = u - np.round(u - 0.5 * (row % 2)) - 0.5 * (row % 2)
        dv = (v - row) * 0.866
        dist = np.sqrt(du * du + dv * dv) * 0.5 - 0.17
        dot = np.clip(0.5 - dist * obj.radius * size, 0.0, 1.0)[..., None]
        base = np.broadcast_to(colour, dot.shape[:2] + (3,))
        colour = base * (1 - dot) + np.asarray(SUBJECT_DOT_COLOUR, dtype=np.float32) * dot
    return colour, alpha


def render(scene: Scene, size: int = 32, style: str = "flat") -> np.ndarray:
    """Render ``scene`` to ``[size, size, 3]`` float32 in [0, 1] with analytic anti-aliasing.

    ``style`` is one of :data:`STYLES`: ``flat`` (default, what the detector is validated on),
    ``outlined`` (strokes only), ``striped`` (diagonal stripes) or ``pastel`` (colours mixed with
    white). Deterministic: the scene holds every random choice.
    """
    check_names("style", style, STYLES)
    image = render_background(scene, size)
    grid = pixel_centres(size)
    for obj in scene.objects:  # back to front
        rows, cols = _pixel_window(obj, size)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        sdf = object_sdf(obj, grid[cols], grid[rows])
        coverage = coverage_from_sdf(sdf, size)
        colour, alpha = _fill(obj, coverage, sdf, rows, cols, size, style)
        alpha = alpha[..., None].astype(np.float32)
        patch = image[rows, cols]
        image[rows, cols] = patch * (1.0 - alpha) + colour * alpha
    return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` (or ``[N, H, W, 3]``) in [0, 1] to a float tensor ``[3, H, W]`` in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, -3)))
    return tensor * 2.0 - 1.0


def to_numpy_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: ``[3, H, W]`` in [-1, 1] to ``[H, W, 3]`` in [0, 1]."""
    array = tensor.detach().float().cpu().clamp(-1, 1).numpy()
    return np.moveaxis(array, -3, -1) * 0.5 + 0.5


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float in [0, 1] to uint8 (rounded), e.g. for ``PIL.Image.fromarray``."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path, parameters: dict | None = None) -> None:
    """Save ``[H, W, 3]`` in [0, 1] as PNG, with ``parameters`` as JSON in a ``difflab`` text chunk
    (read back with ``PIL.Image.open(path).text["difflab"]``)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("difflab", json.dumps(parameters))
    Image.fromarray(to_uint8(image)).save(path, pnginfo=info)
