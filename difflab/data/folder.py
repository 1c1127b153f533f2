"""Users' own images: a folder of pictures with captions in ``metadata.jsonl``.

This follows the HuggingFace ``imagefolder`` convention: each line of ``metadata.jsonl`` is a JSON
object with ``file_name`` (a path relative to the folder) and a caption column (``text`` by
default). Without ``metadata.jsonl`` every image under the folder is used with an empty caption.

Every file is opened and fully decoded up front. Unreadable, truncated and decompression-bomb
images (more than ``max_pixels``) are skipped and listed in :attr:`ImageFolderDataset.skipped` with
the reason; a folder with no usable image is refused with a message saying what was expected.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from difflab.data.shapes_render import to_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset and why."""

    path: str
    reason: str


def read_image_checked(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image fully into ``[H, W, 3]`` uint8, raising ``ValueError`` with the reason if it
    is unreadable, truncated, or larger than ``max_pixels`` (checked before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ValueError(
                        f"decompression bomb: {width}x{height} pixels is over max_pixels={max_pixels}"
                    )
                image.load()  # decodes everything: truncated data raises here
                return np.asarray(image.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise ValueError("not an image PIL can read") from None
    except OSError as error:
        raise ValueError(f"unreadable or truncated: {error}") from None
    except SyntaxError as error:  # PIL raises SyntaxError for some malformed headers
        raise ValueError(f"malformed image: {error}") from None


def centre_crop_resize(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``[H, W, C]`` uint8 to a square and resize it to ``size`` (Lanczos)."""
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(array[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


class ImageFolderDataset(Dataset):
    """Images and captions from ``root`` (see the module docstring for the layout).

    Items are ``{"image": [3, H, W] in [-1, 1], "caption": str, "file_name": str}``. With ``size``
    every image is centre-cropped to a square and resized to ``size`` (so batches collate);
    without it images keep their own sizes. ``caption_column`` names the caption key of
    ``metadata.jsonl`` (``text`` by default, ``caption`` or ``prompt`` are also looked for).
    """

    def __init__(
        self,
        root: str | Path,
        size: int | None = None,
        caption_column: str = "text",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        self.skipped: list[SkippedFile] = []
        self.images: list[np.ndarray] = []
        self.captions: list[str] = []
        self.file_names: list[str] = []
        for relative, caption in self._entries(caption_column):
            path = self.root / relative
            if not path.resolve().is_relative_to(self.root.resolve()):
                self.skipped.append(SkippedFile(relative, "points outside the folder"))
                continue
            if not path.is_file():
                self.skipped.append(SkippedFile(relative, "listed in metadata.jsonl but missing"))
                continue
            try:
                array = read_image_checked(path, max_pixels)
            except ValueError as error:
                self.skipped.append(SkippedFile(relative, str(error)))
                continue
            self.images.append(centre_crop_resize(array, size) if size else array)
            self.captions.append(caption)
            self.file_names.append(relative)
        if not self.images:
            details = (
                "; ".join(f"{s.path}: {s.reason}" for s in self.skipped[:10])
                or "the folder holds no image files"
            )
            raise ValueError(
                f"no usable images in {self.root} ({details}). Expected image files ({', '.join(IMAGE_SUFFIXES)}), "
                'optionally listed in metadata.jsonl lines like {"file_name": "cat.png", "text": "a cat"}'
            )

    def _entries(self, caption_column: str) -> list[tuple[str, str]]:
        metadata = self.root / "metadata.jsonl"
        files = sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not metadata.is_file():
            return [(f, "") for f in files]
        entries = []
        for number, text in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                name = str(row["file_name"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f'{metadata}, line {number}: expected a JSON object with "file_name" and "{caption_column}", got {text[:80]!r}'
                ) from None
            caption = next(
                (row[k] for k in (caption_column, "text", "caption", "prompt") if k in row), ""
            )
            entries.append((name, str(caption)))
        listed = {Path(name).as_posix() for name, _ in entries}
        self.skipped += [
            SkippedFile(f, "not listed in metadata.jsonl")
            for f in files
            if Path(f).as_posix() not in listed
        ]
        return entries

    def report(self) -> str:
        """A human-readable summary: how many images were kept and each skipped file's reason."""
        lines = [f"{len(self.images)} images kept from {self.root}, {len(self.skipped)} skipped"]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = to_tensor(self.images[index].astype(np.float32) / 255.0)
        return {
            "image": image,
            "caption": self.captions[index],
            "file_name": self.file_names[index],
        }
