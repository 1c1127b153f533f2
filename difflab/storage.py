"""Writing model folders so that a reader never sees half of one: files go into a hidden
sibling folder that then takes the target's place by rename (``os.replace`` is atomic on one
file system), and an existing folder is replaced only when it is of the same kind.

Shared by every ``save_*`` that writes a folder (feature networks, CLIP models, LoRA adapters,
the zoo's pipelines); single files (checkpoints) use :mod:`difflab.train.checkpoint`. Commands
that write images into a user's folder keep what is there: :func:`require_empty_folder` refuses a
folder that already holds files, :func:`unused_path` picks a free name beside them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def require_empty_folder(folder: str | Path | None, option: str) -> None:
    """Refuse (ValueError naming ``option``) a ``folder`` that exists and holds files, so that
    writing a fresh set of images into it cannot replace or mix with earlier ones."""
    if folder is None or not Path(folder).exists():
        return
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} is a file, not a folder; pass a new or empty {option} folder")
    if any(Path(folder).iterdir()):
        raise ValueError(f"{folder} already holds files; pass a new or empty {option} folder")


def unused_path(path: Path) -> Path:
    """``path`` if nothing is there yet, else the first free ``<stem>-<k><suffix>`` beside it
    (k = 1, 2, ...): outputs are added to a folder, never written over a file already in it."""
    k = 0
    candidate = path
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return candidate


def write_folder_atomically(
    folder: Path,
    fill: Callable[[Path], None],
    replaceable: Callable[[Path], bool],
    what: str = "model",
) -> Path:
    """``fill(staging)`` writes the files into a hidden sibling of ``folder``, which then takes
    ``folder``'s place by rename (an old copy is moved aside first and removed after). An
    existing, non-empty ``folder`` is replaced only if ``replaceable(folder)``; otherwise it is
    refused and left untouched. Files are made world-readable (package folders must be)."""
    if (
        folder.exists()
        and not replaceable(folder)
        and (not folder.is_dir() or any(folder.iterdir()))
    ):
        raise FileExistsError(
            f"{folder} exists and is not a {what} folder (it holds something else); choose a "
            "new or empty folder"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(staging)
        for path in [staging, *staging.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        old = folder.with_name(f".{folder.name}-old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_weights_folder(
    folder: Path,
    module,
    config: dict,
    replaceable: Callable[[Path], bool],
    what: str,
    dtype=None,
    extra: dict[str, str] | None = None,
) -> Path:
    """The one-module folder layout of difflab's own networks (feature networks, CLIP models):
    ``config.json`` (``config``) and ``model.safetensors`` (``module``'s state dict, cast to
    ``dtype`` if given, e.g. ``torch.float16`` for the zoo), plus ``extra`` files (name -> text,
    e.g. a model card), written by :func:`write_folder_atomically`."""
    import json

    from safetensors.torch import save_file

    def fill(staging: Path) -> None:
        tensors = {
            key: (value.to(dtype) if dtype is not None else value).detach().cpu().contiguous()
            for key, value in module.state_dict().items()
        }
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for name, text in (extra or {}).items():
            (staging / name).write_text(text)

    return write_folder_atomically(Path(folder), fill, replaceable, what)
