"""Real images that ship inside installed packages (no download): scikit-learn's handwritten digits,
scikit-image's LFW subset and its sample photographs.

Every loader returns tensors in the library convention (``[N, C, H, W]`` float in [-1, 1]);
:class:`TensorImageDataset` turns any of them into a dataset of ``{"image", "caption", "label"}``
dicts, and :func:`sample_photograph` gives single pictures to edit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from difflab.data.folder import centre_crop_resize
from difflab.data.shapes_geometry import check_names

# scikit-image's bundled pictures (skimage.data) that are photographs or photo-like textures.
PHOTOGRAPHS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _to_tensor(images: np.ndarray, low: float, high: float) -> torch.Tensor:
    """``[N, H, W]`` or ``[N, H, W, C]`` values in [low, high] to ``[N, C, H, W]`` in [-1, 1]."""
    array = (np.asarray(images, dtype=np.float32) - low) / (high - low) * 2.0 - 1.0
    array = array[:, None] if array.ndim == 3 else np.moveaxis(array, -1, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size`` x ``size`` (bilinear with antialiasing)."""
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    ).clamp(-1, 1)


def load_digits(size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits: ``(images [1797, 1, 8, 8] in [-1, 1], labels)``,
    ink bright on dark; ``size`` resizes them (e.g. 16 or 32)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = _to_tensor(bunch.images, 0.0, 16.0)
    return (resize_images(images, size) if size else images), torch.as_tensor(
        bunch.target, dtype=torch.long
    )


def load_lfw_subset(
    faces_only: bool = False, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's LFW subset: 200 grey 25x25 crops, the first 100 faces (label 1) and then 100
    non-faces (label 0): ``(images [N, 1, 25, 25] in [-1, 1], labels)``."""
    from skimage import data

    images = _to_tensor(data.lfw_subset(), 0.0, 1.0)
    labels = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(100, dtype=torch.long)])
    if faces_only:
        images, labels = images[:100], labels[:100]
    return (resize_images(images, size) if size else images), labels


def sample_photograph(name: str, size: int | None = 64) -> torch.Tensor:
    """One of scikit-image's bundled pictures (:data:`PHOTOGRAPHS`) as ``[3, H, W]`` in [-1, 1]:
    centre-cropped to a square and resized to ``size`` (``None`` keeps the full picture)."""
    check_names("photograph", name, PHOTOGRAPHS)
    from skimage import data

    array = np.asarray(getattr(data, name)())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    array = array[..., :3]
    if size is not None:
        array = centre_crop_resize(array.astype(np.uint8), size)
    return _to_tensor(array[None], 0.0, 255.0)[0]


class TensorImageDataset(Dataset):
    """Items ``{"image": [C, H, W], "caption": str, "label": int}`` from tensors already in [-1, 1]."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        n = images.shape[0]
        if (labels is not None and len(labels) != n) or (
            captions is not None and len(captions) != n
        ):
            raise ValueError(f"labels and captions need one entry per image ({n})")
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(n, dtype=torch.long)
        self.captions = captions if captions is not None else [""] * n

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "caption": self.captions[index],
            "label": int(self.labels[index]),
        }


def digits_dataset(
    size: int | None = None, split: str = "train", validation_fraction: float = 0.1, seed: int = 0
) -> TensorImageDataset:
    """The digits as a dataset with captions ("a handwritten seven") and a deterministic split:
    a seeded permutation puts ``validation_fraction`` of the images in ``"validation"``."""
    check_names("split", split, ("train", "validation"))
    images, labels = load_digits(size)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    cut = int(round(len(labels) * validation_fraction))
    chosen = order[cut:] if split == "train" else order[:cut]
    captions = [f"a handwritten {DIGIT_WORDS[int(label)]}" for label in labels[chosen]]
    return TensorImageDataset(images[chosen], labels[chosen], captions)
