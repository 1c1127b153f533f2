"""Figures for guided and cascaded sampling (``benchmarks/guidance_cascades.py``):

- :func:`saturation`: the fraction of pixel values at the ends of the 8-bit range, the failure
  Imagen's dynamic thresholding addresses (Saharia et al. 2022, Sec. 2.3 and Fig. A.8: at high
  guidance weights static clipping gives saturated, over-exposed images);
- :func:`attribute_hits`: whether ShapesEval's detector finds the attributes a classifier guided
  toward (each present in some object, and all carried by one object);
- :func:`pairwise_distance`: the mean distance between the feature vectors of a set of images,
  a diversity figure (guidance trades it for fidelity: Dhariwal & Nichol 2021, Sec. 4.3 and
  Fig. 5; Ho & Salimans 2022, Fig. 4);
- :func:`matched_fidelity`: a method's diversity interpolated at another's fidelity, to compare
  two guidance methods at equal accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from difflab.eval.shapes_detector import as_float_image, detect


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] as 8-bit arrays [N, H, W, C], rounded as a saved PNG is."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def saturation(images: torch.Tensor) -> float:
    """The fraction of pixel values (all channels) at 0 or 255 once quantised to 8 bits. Real
    shapes renders have some (black and white objects); compare with their figure."""
    pixels = to_uint8(images)
    return float(((pixels == 0) | (pixels == 255)).mean())


def attribute_hits(images: torch.Tensor, targets: Sequence[tuple[str, str]]) -> dict:
    """Detect each image (:func:`~difflab.eval.shapes_detector.detect`) and check the
    ``(attribute, value)`` targets, attributes ``shape``, ``colour``, ``size`` or ``count``
    (the number of objects). Returns the fractions of images where every target holds
    (``all``; a shape/colour/size target holds when some object has that value) and where one
    object carries all shape/colour/size targets together (``bound``), and per target."""
    per_target = {f"{a}={v}": [] for a, v in targets}
    all_hit, bound = [], []
    object_targets = [(a, v) for a, v in targets if a != "count"]
    for array in to_uint8(images):
        found = detect(as_float_image(array))
        hits = []
        for attribute, value in targets:
            if attribute == "count":
                hit = str(len(found)) == str(value)
            elif attribute in ("shape", "colour", "size"):
                hit = any(getattr(d, attribute) == value for d in found)
            else:
                raise ValueError(f"unknown attribute {attribute!r}; use shape, colour, size, count")
            per_target[f"{attribute}={value}"].append(hit)
            hits.append(hit)
        all_hit.append(all(hits))
        bound.append(
            any(all(getattr(d, a) == v for a, v in object_targets) for d in found)
            if object_targets
            else all(hits)
        )
    return {
        "all": float(np.mean(all_hit)),
        "bound": float(np.mean(bound)),
        "per_target": {k: float(np.mean(v)) for k, v in per_target.items()},
        "images": len(all_hit),
    }


def pairwise_distance(features: torch.Tensor) -> float:
    """The mean Euclidean distance between distinct feature vectors [N, D] (N >= 2)."""
    if len(features) < 2:
        raise ValueError("pairwise distance needs at least 2 images")
    distances = torch.cdist(features.double(), features.double())
    n = len(features)
    return float(distances.sum() / (n * (n - 1)))


def matched_fidelity(
    fidelity: Sequence[float], diversity: Sequence[float], at: float
) -> float | None:
    """The diversity of a method whose (fidelity, diversity) curve is given, linearly
    interpolated at fidelity ``at`` along the curve's points in order; None when ``at`` lies
    outside the fidelities it reached."""
    points = list(zip(fidelity, diversity, strict=True))
    for (f0, d0), (f1, d1) in zip(points, points[1:], strict=False):
        low, high = min(f0, f1), max(f0, f1)
        if low <= at <= high:
            return d0 if f1 == f0 else d0 + (d1 - d0) * (at - f0) / (f1 - f0)
    return None
