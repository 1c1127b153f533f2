"""Image features for the distribution metrics of :mod:`difflab.eval.metrics`.

FID, KID and precision/recall compare two *sets of feature vectors*, not images: what makes them
"Inception" metrics is only the network that turns images into features (Inception-v3's 2048-d
pool layer in the papers). Here that network is pluggable. A **feature extractor** is any callable

    extractor(images [B, C, H, W] float in [-1, 1]) -> features [B, D]

(an ``nn.Module`` in eval mode, a function, a lambda). :func:`extract_features` runs one over a
tensor of images or an iterable of images/batches, in batches, under ``torch.no_grad()``, with a
progress bar, and checks what comes back. :class:`PixelFeatures` is a weight-free extractor
(down-sampled pixels): it makes the metrics usable and testable without any download, but its
distances are pixel distances, not perceptual ones, so only compare numbers measured with the
same extractor. :class:`PrecomputedFeatures` lets torchmetrics' metric classes consume features
computed elsewhere (see :func:`difflab.eval.metrics.torchmetrics_fid`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "FeatureExtractor", "PixelFeatures", "PrecomputedFeatures", "check_images", "extract_features",
]  # fmt: skip

# Images are float in [-1, 1]; allow a little slack for resampling overshoot.
_RANGE_SLACK = 1e-3


class FeatureExtractor(Protocol):
    """Images ``[B, C, H, W]`` float in [-1, 1] -> features ``[B, D]`` (one row per image).

    It must not depend on the batch it is called with (no BatchNorm/Dropout in training mode),
    so that features do not change with ``batch_size``.
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def check_images(images: torch.Tensor, where: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a finite float ``[N, C, H, W]`` tensor in [-1, 1]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{where}: expected a torch.Tensor [N, C, H, W], got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(f"{where}: expected images [N, C, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"{where}: expected float images in [-1, 1], got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 127.5 - 1"
        )
    if images.numel() == 0:
        return
    if not torch.isfinite(images).all():
        raise ValueError(f"{where}: images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1 - _RANGE_SLACK or high > 1 + _RANGE_SLACK:
        hint = " (they look like [0, 255]: use images / 127.5 - 1)" if high > 2 else ""
        raise ValueError(
            f"{where}: values span [{low:.3g}, {high:.3g}] but difflab images are in [-1, 1]{hint}"
        )


def _batches(images: torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Regroup a tensor ``[N, C, H, W]`` or an iterable (of images ``[C, H, W]``, batches
    ``[B, C, H, W]``, tuples whose first item is one of those, or dicts with an ``"image"``) into
    batches of ``batch_size`` (the last one may be smaller)."""
    if isinstance(images, torch.Tensor):
        check_images(images)
        yield from images.split(batch_size)
        return
    pending: list[torch.Tensor] = []
    count = 0
    for item in images:
        if isinstance(item, tuple | list):
            item = item[0]
        if isinstance(item, dict):
            if "image" not in item:
                raise ValueError(f"dict items need an 'image' key; got keys {sorted(item)}")
            item = item["image"]
        if isinstance(item, torch.Tensor) and item.ndim == 3:
            item = item.unsqueeze(0)
        check_images(item, "an item of the image iterable")
        pending.append(item)
        count += item.shape[0]
        while count >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending)


@contextmanager
def _eval_mode(extractor: object) -> Iterator[None]:
    """Put an ``nn.Module`` (and every submodule) in eval mode, restoring each one's mode after."""
    modes = (
        [(m, m.training) for m in extractor.modules()] if isinstance(extractor, nn.Module) else []
    )
    for module, _ in modes:
        module.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor | Iterable,
    batch_size: int = 64,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    description: str = "features",
) -> torch.Tensor:
    """Features ``[N, D]`` (on the CPU) of every image, computed ``batch_size`` at a time.

    ``images`` is a tensor ``[N, C, H, W]`` in [-1, 1] or an iterable of images ``[C, H, W]``,
    batches ``[B, C, H, W]``, tuples/lists whose first item is one of those, or dicts with an
    ``"image"`` entry (difflab's datasets); iterables are regrouped into batches of
    ``batch_size``. Each batch is moved to ``device`` when one is given (the extractor's own
    placement is left alone). The extractor runs under ``torch.no_grad()``, and an ``nn.Module``
    in eval mode (restored afterwards), so BatchNorm/Dropout cannot make features depend on the
    batch.
    """
    if not callable(extractor):
        raise ValueError(
            f"extractor must be callable images -> features, got {type(extractor).__name__}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    # An iterable's len() may count batches (a DataLoader) rather than images: no total then.
    total = len(images) if isinstance(images, torch.Tensor) else None
    features: list[torch.Tensor] = []
    bar = tqdm(total=total, desc=description, unit="img", disable=not progress, leave=False)
    with torch.no_grad(), bar, _eval_mode(extractor):
        for batch in _batches(images, batch_size):
            batch_features = extractor(batch if device is None else batch.to(device))
            if not isinstance(batch_features, torch.Tensor):
                raise ValueError(
                    f"the feature extractor returned {type(batch_features).__name__}; it must return "
                    "a tensor [B, D] (wrap models that return tuples or dicts to pick one output)"
                )
            if batch_features.ndim != 2 or batch_features.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"the feature extractor turned a batch of {batch.shape[0]} images into shape "
                    f"{tuple(batch_features.shape)}; it must return [{batch.shape[0]}, D] "
                    "(flatten spatial feature maps, e.g. with a global average pool)"
                )
            features.append(batch_features.detach().cpu())
            bar.update(batch.shape[0])
    if not features:
        raise ValueError("no images to extract features from (the tensor or iterable is empty)")
    return torch.cat(features)


class PixelFeatures(nn.Module):
    """Weight-free features: images area-averaged to ``size`` x ``size`` and flattened,
    ``D = channels * size**2``.

    A baseline extractor that needs no download: the metrics then measure pixel statistics
    (layout, colour), not the semantic similarity an ImageNet network measures. Keep ``D`` well
    below the number of images (FID needs more images than feature dimensions).
    """

    def __init__(self, size: int = 8, channels: int = 3):
        super().__init__()
        self.size, self.channels = size, channels
        self.num_features = channels * size * size  # read by torchmetrics' metric classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"PixelFeatures(channels={self.channels}) expects images [N, {self.channels}, H, W], "
                f"got {tuple(images.shape)}"
            )
        return nn.functional.adaptive_avg_pool2d(images.float(), self.size).flatten(1)


class PrecomputedFeatures(nn.Module):
    """Identity ``[N, D] -> [N, D]``: lets a torchmetrics image metric built with
    ``feature=PrecomputedFeatures(D)`` be updated with features instead of images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # torchmetrics sizes its state from this attribute

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"PrecomputedFeatures({self.num_features}) expects features [N, {self.num_features}], "
                f"got {tuple(features.shape)}"
            )
        return features
