"""The image-folder loader: captions from metadata.jsonl and bad files skipped with reasons."""

import json

import numpy as np
import pytest
from PIL import Image

from difflab.data.folder import ImageFolderDataset


def _save(path, size=(20, 12), colour=(200, 30, 30), fmt=None):
    Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8)).save(path, fmt)


def test_folder_with_metadata_skips_bad_files_with_reasons(tmp_path):
    _save(tmp_path / "red.png")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "blue.jpg", colour=(20, 40, 220))
    _save(tmp_path / "big.png", size=(300, 300))
    _save(tmp_path / "unlisted.png")
    whole = (tmp_path / "red.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "noise.png").write_bytes(b"this is not an image at all")
    rows = [
        {"file_name": "red.png", "text": "a red picture"},
        {"file_name": "sub/blue.jpg", "text": "a blue picture"},
        {"file_name": "big.png", "text": "too many pixels"},
        {"file_name": "truncated.png", "text": "cut short"},
        {"file_name": "noise.png", "text": "garbage"},
        {"file_name": "gone.png", "text": "missing"},
        {"file_name": "../escape.png", "text": "outside"},
    ]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = ImageFolderDataset(tmp_path, size=8, max_pixels=50_000)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["caption"] == "a red picture" and item["image"].shape == (3, 8, 8)
    assert item["image"][0].mean() > 0.4 and item["image"][2].mean() < -0.6  # red, in [-1, 1]
    assert dataset[1]["file_name"] == "sub/blue.jpg" and dataset[1]["image"][2].mean() > 0.5
    reasons = {s.path: s.reason for s in dataset.skipped}
    assert "decompression bomb" in reasons["big.png"] and "300x300" in reasons["big.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "not an image" in reasons["noise.png"]
    assert "missing" in reasons["gone.png"] and "outside" in reasons["../escape.png"]
    assert "not listed" in reasons["unlisted.png"]
    assert "2 images kept" in dataset.report() and "skipped noise.png" in dataset.report()


def test_folder_without_metadata_and_clear_refusals(tmp_path):
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.webp", fmt="WEBP")
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = ImageFolderDataset(tmp_path)
    assert [d["caption"] for d in dataset] == ["", ""] and dataset[0]["image"].shape == (3, 12, 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable images.*holds no image files.*metadata.jsonl"):
        ImageFolderDataset(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="no usable images.*x.png"):
        ImageFolderDataset(bad)
    (bad / "metadata.jsonl").write_text(
        '{"file_name": "x.png", "text": "ok"}\n{"text": "no file"}\n'
    )
    with pytest.raises(
        ValueError, match='metadata.jsonl, line 2: expected a JSON object with "file_name"'
    ):
        ImageFolderDataset(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")
