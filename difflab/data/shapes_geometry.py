"""Vocabulary and geometry of the shapes world: palette, shapes as signed distance functions, sizes.

Every shape is a signed distance function (SDF) in a local frame, normalised at import time so
that its area equals that of the unit disc and its area centroid sits at the origin. A shape of
size ``r`` (an *equivalent radius*, as a fraction of the image side) therefore covers
``pi * r**2`` of the image whatever its kind: size is read back from area alone, and an object's
centre is its centroid. Anti-aliasing is analytic: a pixel's coverage is
``clip(0.5 - sdf_in_pixels, 0, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# ---- colours ---------------------------------------------------------------------------------
# GenEval's ten colour names (Ghosh et al. 2023). The sRGB values were chosen to be far apart in
# CIELAB from each other and from the mid-grey backgrounds (the smallest distance is checked by a
# test), so that the detector can tell them apart by nearest neighbour.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (1.00, 0.93, 0.10),
    "green": (0.05, 0.62, 0.15),
    "blue": (0.10, 0.28, 0.92),
    "purple": (0.50, 0.12, 0.70),
    "pink": (1.00, 0.55, 0.80),
    "brown": (0.45, 0.25, 0.08),
    "black": (0.03, 0.03, 0.03),
    "white": (0.98, 0.98, 0.98),
}

# Backgrounds: mid greys with a faint tint, so that both black and white objects stand out.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "grey": (0.50, 0.50, 0.50),
    "warm grey": (0.54, 0.51, 0.48),
    "cool grey": (0.47, 0.50, 0.54),
    "light grey": (0.60, 0.60, 0.60),
}

# Equivalent radius of each size, as a fraction of the image side (area = pi * r**2).
SIZES: dict[str, float] = {"small": 0.085, "large": 0.13}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB values in [0, 1] (any shape ``[..., 3]``) to CIELAB (D65)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


# ---- signed distance functions (local frame, y pointing down) ----------------------------------
# Distances follow Inigo Quilez's 2D SDF notes; the polygon SDF is exact for any simple polygon.


def polygon_sdf(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Exact signed distance from points ``(x, y)`` to a simple polygon (negative inside)."""
    vx, vy = vertices[:, 0, None], vertices[:, 1, None]
    ex, ey = np.roll(vx, -1, axis=0) - vx, np.roll(vy, -1, axis=0) - vy
    px, py = x.reshape(1, -1), y.reshape(1, -1)
    wx, wy = px - vx, py - vy
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    bx, by = wx - ex * t, wy - ey * t
    dist = np.sqrt((bx * bx + by * by).min(axis=0))
    # Even-odd rule: count edges crossed by a horizontal ray.
    above, below_next = py >= vy, py < np.roll(vy, -1, axis=0)
    cross = ex * wy > ey * wx
    flips = (above & below_next & cross) | (~above & ~below_next & ~cross)
    inside = flips.sum(axis=0) % 2 == 1
    return np.where(inside, -dist, dist).reshape(x.shape)


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star_vertices(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_vertices(half_length: float = 1.0, half_width: float = 0.36) -> np.ndarray:
    a, w = half_length, half_width
    return np.array(
        [
            [w, -a],
            [w, -w],
            [a, -w],
            [a, w],
            [w, w],
            [w, a],
            [-w, a],
            [-w, w],
            [-a, w],
            [-a, -w],
            [-w, -w],
            [-w, -a],
        ]
    )


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y) - 1.0


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    qx, qy = np.abs(x) - 1.0, np.abs(y) - 1.0
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # An annulus with inner radius 0.5: mid-line radius 0.75, half-thickness 0.25.
    return np.abs(np.sqrt(x * x + y * y) - 0.75) - 0.25


def _polygon(vertices: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda x, y: polygon_sdf(x, y, vertices)


def _heart_vertices(n: int = 48) -> np.ndarray:
    # The classic parametric heart curve, point up flipped so the tip points down (y down).
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)[::-1] / 16.0


_RAW_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _polygon(_regular_polygon(3, 1.0, -np.pi / 2)),
    "star": _polygon(_star_vertices()),
    "cross": _polygon(_cross_vertices()),
    "ring": _ring,
    "heart": _polygon(_heart_vertices()),
}


@dataclass(frozen=True)
class ShapeGeometry:
    """A shape normalised to unit equivalent radius: ``sdf(x, y)`` in units of that radius."""

    name: str
    raw_sdf: Callable[[np.ndarray, np.ndarray], np.ndarray]
    scale: float  # raw units per unit equivalent radius
    offset: tuple[float, float]  # raw-frame centroid
    half_extent: tuple[float, float]  # half width/height of the bounding box, unit radius
    bounding_radius: float  # farthest point from the centroid, unit radius

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance (in equivalent radii) at local coordinates in equivalent radii."""
        return (
            self.raw_sdf(x * self.scale + self.offset[0], y * self.scale + self.offset[1])
            / self.scale
        )


def _normalise(name: str, raw: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> ShapeGeometry:
    n = 320
    coords = np.linspace(-1.6, 1.6, n)
    step = coords[1] - coords[0]
    x, y = np.meshgrid(coords, coords)
    coverage = np.clip(0.5 - raw(x, y) / step, 0.0, 1.0)
    area = coverage.sum() * step * step
    cx, cy = (coverage * x).sum() / coverage.sum(), (coverage * y).sum() / coverage.sum()
    scale = float(np.sqrt(area / np.pi))
    inside = coverage > 0.5
    xs, ys = (x[inside] - cx) / scale, (y[inside] - cy) / scale
    half = (float(np.abs(xs).max() + step / scale), float(np.abs(ys).max() + step / scale))
    radius = float(np.sqrt(xs * xs + ys * ys).max() + step / scale)
    return ShapeGeometry(name, raw, scale, (float(cx), float(cy)), half, radius)


SHAPE_GEOMETRY: dict[str, ShapeGeometry] = {
    name: _normalise(name, raw) for name, raw in _RAW_SHAPES.items()
}
SHAPES: tuple[str, ...] = tuple(SHAPE_GEOMETRY)
PLURALS: dict[str, str] = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}


def placed_sdf(
    shape: str,
    xs: np.ndarray,
    ys: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    rotation: float = 0.0,
) -> np.ndarray:
    """Signed distance on the grid ``xs`` (columns) x ``ys`` (rows) to ``shape`` placed at
    ``centre`` with equivalent ``radius`` and ``rotation`` (radians); all in the grid's units."""
    lx, ly = (xs[None, :] - centre[0]) / radius, (ys[:, None] - centre[1]) / radius
    if rotation:
        c, s = np.cos(rotation), np.sin(rotation)
        lx, ly = c * lx + s * ly, -s * lx + c * ly
    lx, ly = np.broadcast_arrays(lx, ly)
    return SHAPE_GEOMETRY[shape].sdf(lx, ly) * radius


def check_names(kind: str, names: object, valid: tuple[str, ...] | list[str]) -> None:
    """Raise ``ValueError`` naming any entry of ``names`` not in ``valid`` and listing valid ones."""
    items = [names] if isinstance(names, str) else list(names)  # type: ignore[call-overload]
    unknown = [n for n in items if n not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown!r}; valid {kind}s are: {', '.join(valid)}")
