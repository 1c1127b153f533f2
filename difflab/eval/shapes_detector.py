"""A deterministic, weight-free detector that reads a shapes-world image back into objects.

It plays the role of GenEval's Mask2Former + CLIP colour classifier (Ghosh et al. 2023) with
exact knowledge of the world instead of learned weights:

1. the background colour is the median of the border pixels; noisy images (noise estimated
   from the border) are lightly smoothed first. A pixel is foreground when its CIELAB distance
   to the background exceeds :data:`FOREGROUND_DELTA_E` (with hysteresis on noisy images);
2. 8-connected foreground components smaller than ~40 % of a small object are noise. Each
   component's clearly coloured ("core") pixels vote for a palette colour by their distance to
   that colour's mixing segment background→colour (anti-aliasing, blur and JPEG mix colours with
   the background linearly in sRGB). A component with two strong colours (touching objects) is
   split between them, and so is a one-colour component whose strong pixels form separate blobs
   joined only by weak ones (neighbours bridged by blur or JPEG ringing);
3. each object's soft coverage is the projection of its pixels onto its colour's segment, in a
   luma-weighted metric (JPEG keeps luma sharp). Its sum gives the size (shapes are equal-area
   normalised) and its centroid the centre;
4. the shape is the template (every shape, rendered with the renderer's own SDFs at that centre
   and area, sharp and blurred at :data:`BLUR_SIGMAS_PX`) with the smallest L1 distance to the
   soft coverage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from difflab.data.shapes_geometry import COLOURS, SHAPES, SIZES, placed_sdf, srgb_to_lab
from difflab.data.shapes_scene import Scene

FOREGROUND_DELTA_E = 18.0
PALETTE_NAMES = tuple(COLOURS)
PALETTE_RGB = np.array([COLOURS[c] for c in PALETTE_NAMES])
PALETTE_LAB = srgb_to_lab(PALETTE_RGB)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# RGB -> (luma, 0.5 x chroma) metric for coverage estimation (BT.601 YCbCr, chroma down-weighted).
COVERAGE_METRIC = np.array(
    [[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]]
).T * np.array([1.0, 0.5, 0.5])
# Blur widths (pixels) the templates are also compared at, so blurred images still match.
BLUR_SIGMAS_PX = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


@dataclass(frozen=True)
class Detection:
    """One detected object; ``centre`` and ``box`` ``(x0, y0, x1, y1)`` are image fractions,
    ``area`` the fraction of the image covered, ``shape_error`` the template's L1 mismatch per unit
    area (0 = exact) and ``colour_distance`` the CIELAB distance to the named colour."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]
    box: tuple[float, float, float, float]
    area: float
    shape_error: float
    colour_distance: float

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields."""
        return asdict(self)


def as_float_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Accept ``[H, W, 3]`` uint8 or float in [0, 1], or a tensor ``[3, H, W]`` in [-1, 1];
    return ``[H, W, 3]`` float64 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a tensor [3, H, W] in [-1, 1], got shape {tuple(image.shape)}"
            )
        array = image.detach().cpu().double().clamp(-1, 1).permute(1, 2, 0).numpy() * 0.5 + 0.5
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {array.shape}")
        array = (
            array.astype(np.float64) / 255.0
            if array.dtype == np.uint8
            else array.astype(np.float64)
        )
    if array.shape[0] != array.shape[1]:
        raise ValueError(
            f"ShapesEval images must be square, got {array.shape[1]}x{array.shape[0]}; crop or pad them"
        )
    return np.clip(array, 0.0, 1.0)


def _template(
    shape: str,
    cx: float,
    cy: float,
    radius_px: float,
    rows: np.ndarray,
    cols: np.ndarray,
    rotation: float,
) -> np.ndarray:
    """Anti-aliased coverage of a shape on pixel rows/cols (pixel units), as the renderer draws it."""
    return np.clip(
        0.5 - placed_sdf(shape, cols + 0.5, rows + 0.5, (cx, cy), radius_px, rotation), 0.0, 1.0
    )


def _classify_shape(
    coverage: np.ndarray,
    region: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    rotations: int,
    shapes: tuple[str, ...],
) -> tuple[str, float, float, float, float]:
    """Best template over shapes, rotations and blur widths; returns (shape, error, cx, cy, r_px)."""
    area = float(coverage.sum())
    cy = float((coverage.sum(axis=1) * (rows + 0.5)).sum() / area)
    cx = float((coverage.sum(axis=0) * (cols + 0.5)).sum() / area)
    radius_px = float(np.sqrt(area / np.pi))

    def template_error(shape: str, rotation: float) -> float:
        sharp = _template(shape, cx, cy, radius_px, rows, cols, rotation)
        errors = []
        for sigma in BLUR_SIGMAS_PX:
            template = (
                ndimage.gaussian_filter(sharp, sigma, mode="constant") * region if sigma else sharp
            )
            errors.append(float(np.abs(coverage - template).sum() / area))
        return min(errors)

    best, best_error = shapes[0], np.inf
    step = 2 * np.pi / rotations
    for shape in shapes:
        error, angle = min((template_error(shape, k * step), k * step) for k in range(rotations))
        if rotations > 1:  # refine around the best coarse angle
            error = min(
                [error]
                + [template_error(shape, angle + f * step) for f in (-1 / 3, -1 / 6, 1 / 6, 1 / 3)]
            )
        if error < best_error:
            best, best_error = shape, error
    return best, best_error, cx, cy, radius_px


def _segment_residuals(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Distance of each pixel ``[n, 3]`` to each palette colour's mixing segment background→colour.

    Anti-aliasing, blur and JPEG all mix an object's colour with the background linearly in sRGB,
    so a mixed pixel lies on its colour's segment even when it is far from the colour itself.
    """
    directions = PALETTE_RGB - background  # [P, 3]
    offsets = pixels - background  # [n, 3]
    t = np.clip(offsets @ directions.T / (directions * directions).sum(axis=1), 0.0, 1.0)  # [n, P]
    return np.linalg.norm(offsets[:, None, :] - t[..., None] * directions[None], axis=-1)


def _border_pixels(image: np.ndarray, band: int) -> np.ndarray:
    return np.concatenate(
        [image[:band].reshape(-1, image.shape[-1]), image[-band:].reshape(-1, image.shape[-1]),
         image[:, :band].reshape(-1, image.shape[-1]), image[:, -band:].reshape(-1, image.shape[-1])]
    )  # fmt: skip


def noise_level(image: np.ndarray) -> float:
    """Robust estimate of additive pixel noise (std, [0, 1] units) from the outer border rows."""
    diffs = np.concatenate(
        [
            np.diff(image[0], axis=0),
            np.diff(image[-1], axis=0),
            np.diff(image[:, 0], axis=0),
            np.diff(image[:, -1], axis=0),
        ]
    )
    return float(np.median(np.abs(diffs)) / 0.6745 / np.sqrt(2))


def _colour_components(
    foreground: np.ndarray,
    rgb: np.ndarray,
    delta: np.ndarray,
    background: np.ndarray,
    min_pixels: float,
) -> list[tuple[np.ndarray, int]]:
    """Foreground components with their palette colour, touching different colours split apart."""
    labels, count = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    found: list[tuple[np.ndarray, int]] = []
    for label in range(1, count + 1):
        mask = labels == label
        if mask.sum() < min_pixels:
            continue
        d = delta[mask]
        core = d >= 0.6 * np.percentile(d, 90)
        residuals = _segment_residuals(rgb[mask][core], background)
        votes = np.bincount(residuals.argmin(axis=1), minlength=len(PALETTE_NAMES))
        colour = int(residuals.sum(axis=0).argmin())
        strong = [int(c) for c in np.flatnonzero(votes >= max(0.25 * min_pixels, 0.2 * core.sum()))]
        pieces: list[tuple[np.ndarray, int]] = []
        if len(strong) > 1:  # touching objects of different colours: nearest strong colour wins
            owner = np.asarray(strong)[
                _segment_residuals(rgb[mask], background)[:, strong].argmin(axis=1)
            ]
            for colour_index in strong:
                part = np.zeros_like(mask)
                part[mask] = owner == colour_index
                sub_labels, sub_count = ndimage.label(part, structure=_EIGHT_CONNECTED)
                pieces += [
                    (sub_labels == k, colour_index)
                    for k in range(1, sub_count + 1)
                    if (sub_labels == k).sum() >= min_pixels
                ]
        # Noise scatters the votes: keep the split only if its pieces are solid blobs.
        if len(pieces) > 1 and sum(int(p.sum()) for p, _ in pieces) >= 0.7 * mask.sum():
            found += pieces
        else:
            found += [(part, colour) for part in _split_bridges(mask, delta, min_pixels)]
    return found


def _split_bridges(mask: np.ndarray, delta: np.ndarray, min_pixels: float) -> list[np.ndarray]:
    """Split a same-colour component whose strong pixels form separate blobs joined only by weak
    ones (two nearby objects bridged by blur or JPEG ringing); each pixel goes to its nearest blob."""
    strong = mask & (delta >= 0.6 * np.percentile(delta[mask], 90))
    blobs, count = ndimage.label(strong, structure=_EIGHT_CONNECTED)
    sizes = ndimage.sum(strong, blobs, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes >= 0.5 * min_pixels) + 1
    if len(keep) < 2:
        return [mask]
    seeds = np.where(np.isin(blobs, keep), blobs, 0)
    _, (near_y, near_x) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[near_y, near_x]
    return [mask & (nearest == k) for k in keep]


def detect(
    image: np.ndarray | torch.Tensor,
    rotations: int = 1,
    shapes: tuple[str, ...] = SHAPES,
    min_area_fraction: float | None = None,
) -> list[Detection]:
    """Detect the objects of a shapes-world image (see the module docstring for the method).

    ``rotations`` > 1 also tries that many evenly spaced rotations of each template, then refines
    around the best one (for scenes rendered with ``SceneConfig(rotate=True)``). Components covering less than
    ``min_area_fraction`` of the image (default: 40 % of a small object) are ignored.
    Detections are ordered by decreasing area.
    """
    rgb = as_float_image(image)
    size = rgb.shape[0]
    noise = noise_level(rgb)
    if noise > 0.01:  # denoise before segmenting; the blur-aware templates absorb the smoothing
        rgb = ndimage.gaussian_filter(rgb, (min(1.0, 12 * noise),) * 2 + (0,))
    lab = srgb_to_lab(rgb)
    border = _border_pixels(rgb, max(1, size // 32))
    background = np.median(border, axis=0)
    delta = np.linalg.norm(lab - srgb_to_lab(background), axis=-1)
    border_delta = _border_pixels(delta[..., None], max(1, size // 32))[:, 0]
    spread = np.median(np.abs(border_delta - np.median(border_delta))) * 1.4826
    # Hysteresis on noisy images: strong pixels seed objects and weaker connected ones join, so the
    # thin parts that denoising dimmed stay attached. Clean images use a single threshold, which
    # keeps blurred neighbours apart.
    high = max(FOREGROUND_DELTA_E, np.median(border_delta) + 6 * spread)
    low = (
        max(0.5 * FOREGROUND_DELTA_E, np.median(border_delta) + 3.5 * spread)
        if noise > 0.01
        else high
    )
    weak_labels, _ = ndimage.label(delta > low, structure=_EIGHT_CONNECTED)
    foreground = np.isin(weak_labels, np.unique(weak_labels[delta > high])) & (weak_labels > 0)
    if min_area_fraction is None:
        min_area_fraction = 0.4 * np.pi * min(SIZES.values()) ** 2
    min_pixels = max(2.0, min_area_fraction * size * size)

    object_masks = _colour_components(foreground, rgb, delta, background, min_pixels)
    if not object_masks:
        return []
    taken = np.zeros((size, size), dtype=np.int32)
    for i, (mask, _) in enumerate(object_masks):
        taken[mask] = i + 1
    # Every pixel belongs to its nearest object; an object's region is its mask grown by 2 px.
    distance, (near_y, near_x) = ndimage.distance_transform_edt(taken == 0, return_indices=True)
    owner = taken[near_y, near_x]
    detections = []
    for i, (mask, colour_index) in enumerate(object_masks):
        region = (owner == i + 1) & (distance <= 2.0)
        ys, xs = np.nonzero(region)
        r0, r1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        crop_region = region[r0:r1, c0:c1]
        # Project onto the background->colour line in a luma-weighted metric: JPEG keeps luma sharp
        # but subsamples chroma, and every palette colour differs from the backgrounds in luma.
        direction = (PALETTE_RGB[colour_index] - background) @ COVERAGE_METRIC
        offsets = (rgb[r0:r1, c0:c1] - background) @ COVERAGE_METRIC
        coverage = (offsets @ direction) / float(direction @ direction)
        coverage = np.clip(coverage, -1.0, 2.0) * crop_region  # unclipped noise averages out
        if coverage.sum() < 0.5 * min_pixels:
            continue
        shape, error, cx, cy, radius_px = _classify_shape(
            coverage, crop_region, rows, cols, rotations, shapes
        )
        radius = radius_px / size
        size_name = min(SIZES, key=lambda s: abs(np.log(radius / SIZES[s])))
        solid = coverage >= 0.5
        sy, sx = np.nonzero(solid) if solid.any() else np.nonzero(coverage > 0)
        box = (
            (c0 + sx.min()) / size,
            (r0 + sy.min()) / size,
            (c0 + sx.max() + 1) / size,
            (r0 + sy.max() + 1) / size,
        )
        core = mask & (delta >= 0.6 * np.percentile(delta[mask], 90))
        detections.append(
            Detection(
                shape=shape,
                colour=PALETTE_NAMES[colour_index],
                size=size_name,
                centre=(cx / size, cy / size),
                box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                area=float(coverage.sum()) / (size * size),
                shape_error=error,
                colour_distance=float(
                    np.linalg.norm(
                        srgb_to_lab(np.median(rgb[core], axis=0)) - PALETTE_LAB[colour_index]
                    )
                ),
            )
        )
    return sorted(detections, key=lambda d: -d.area)


def match_detections(scene: Scene, detections: list[Detection]) -> list[Detection | None]:
    """Pair each ground-truth object with at most one detection (Hungarian matching on centre
    distance, pairs farther apart than 1.5 object radii are left unmatched)."""
    from scipy.optimize import linear_sum_assignment

    matched: list[Detection | None] = [None] * len(scene.objects)
    if not detections or not scene.objects:
        return matched
    cost = np.array(
        [
            [np.hypot(o.centre[0] - d.centre[0], o.centre[1] - d.centre[1]) for d in detections]
            for o in scene.objects
        ]
    )
    for i, j in zip(*linear_sum_assignment(cost), strict=True):
        if cost[i, j] <= 1.5 * scene.objects[i].radius:
            matched[i] = detections[j]
    return matched


def detector_accuracy(
    scenes: list[Scene], images: list[np.ndarray], rotations: int = 1
) -> dict[str, float]:
    """Per-attribute accuracy of :func:`detect` against ground truth.

    ``shape``, ``colour``, ``size``: fraction of ground-truth objects whose matched detection has
    the right attribute (unmatched objects count as wrong); ``centre_error_px``: mean centre error
    of matched objects in pixels; ``count``: fraction of images with the right number of objects.
    """
    totals = {"shape": 0, "colour": 0, "size": 0, "matched": 0, "count": 0}
    objects, centre_error = 0, 0.0
    for scene, image in zip(scenes, images, strict=True):
        size = as_float_image(image).shape[0]
        detections = detect(image, rotations=rotations)
        totals["count"] += len(detections) == len(scene.objects)
        for obj, det in zip(scene.objects, match_detections(scene, detections), strict=True):
            objects += 1
            if det is None:
                continue
            totals["matched"] += 1
            totals["shape"] += det.shape == obj.shape
            totals["colour"] += det.colour == obj.colour
            totals["size"] += det.size == obj.size
            centre_error += (
                np.hypot(det.centre[0] - obj.centre[0], det.centre[1] - obj.centre[1]) * size
            )
    result = {k: v / max(objects, 1) for k, v in totals.items() if k != "count"}
    result["count"] = totals["count"] / max(len(scenes), 1)
    result["centre_error_px"] = centre_error / max(totals["matched"], 1)
    return result


DEGRADATIONS = ("blur", "noise", "jpeg")


def degrade(
    image: np.ndarray, kind: str, level: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Corrupt ``[H, W, 3]`` in [0, 1] for robustness curves: ``blur`` (Gaussian, ``level`` = sigma
    in pixels), ``noise`` (additive Gaussian, ``level`` = std, needs ``rng``) or ``jpeg``
    (``level`` = quality 1-100, 4:2:0 chroma subsampling as PIL does by default)."""
    if kind == "blur":
        return ndimage.gaussian_filter(image, (level, level, 0)) if level > 0 else image
    if kind == "noise":
        if rng is None:
            raise ValueError("noise needs an explicit rng (numpy.random.Generator)")
        return np.clip(image + rng.normal(0.0, level, image.shape), 0.0, 1.0)
    if kind == "jpeg":
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
            buffer, "JPEG", quality=int(level)
        )
        return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64) / 255.0
    raise ValueError(f"unknown degradation {kind!r}; valid kinds are: {', '.join(DEGRADATIONS)}")
