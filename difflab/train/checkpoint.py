"""Pickle-free, atomically written training checkpoints.

A checkpoint is a folder ``checkpoints/step_00001000/`` of ``.safetensors`` files (every tensor:
model, EMA, optimizer moments, loss history, RNG states) and ``.json`` files (everything else).
Nothing is ever pickled or unpickled: no ``torch.save``/``torch.load``, and not
``accelerator.save_state``, which pickles the optimizer and RNG states.

Atomicity: a checkpoint is written into a hidden sibling folder ``.tmp-step_...``, every file and
the folder are fsync'ed, and only then is the folder renamed to ``step_...`` (``os.replace``, a
single atomic rename on POSIX). The latest checkpoint is the ``step_*`` folder with the highest
step, so a write that dies half-way leaves only a ``.tmp-*`` folder, which is never read and is
cleaned up by the next save.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d{8,})$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after ``step`` updates, e.g. ``step_00001000``."""
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, folder)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------------------------
# atomic folder writing


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """Create (empty) the temporary folder a checkpoint of ``step`` is written into.

    Removes stale ``.tmp-*`` folders left by earlier interrupted writes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for p in root.iterdir():
        if p.name.startswith(_TMP_PREFIX) and p.is_dir():
            shutil.rmtree(p)
    tmp = root / f"{_TMP_PREFIX}{checkpoint_name(step)}"
    tmp.mkdir()
    return tmp


def commit_checkpoint(tmp: str | Path, keep: int) -> Path:
    """Make the written ``tmp`` folder a checkpoint (fsync + atomic rename), keep the last ``keep``.

    Returns the final folder.
    """
    tmp = Path(tmp)
    final = tmp.parent / tmp.name[len(_TMP_PREFIX) :]
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step: move the old copy aside first, delete it after
        old = tmp.parent / f"{_TMP_PREFIX}old-{final.name}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    for _, path in list_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(path)
    return final


def write_checkpoint(root: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Atomically write a checkpoint: ``write(folder)`` fills a temporary folder, which is then
    committed with :func:`commit_checkpoint`. If ``write`` raises, the temporary folder is
    removed, earlier checkpoints are untouched, and the exception propagates.
    """
    tmp = begin_checkpoint(root, step)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_checkpoint(tmp, keep)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (a small helper so every JSON file looks the same)."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save named tensors with safetensors (detached, on CPU, contiguous)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load named tensors from a safetensors file onto the CPU."""
    return load_file(str(path), device="cpu")


def load_weights(folder: str | Path, model: torch.nn.Module, ema: bool = True) -> Path:
    """Load a checkpoint's weights into ``model`` (for export or evaluation, not for resuming).

    Args:
        folder: a checkpoint folder, or a run folder (its latest checkpoint is used).
        model: a model of the architecture that was trained.
        ema: load the EMA weights when the checkpoint has them (the ones to sample from).

    Returns:
        the file that was loaded.
    """
    from safetensors.torch import load_model

    folder = Path(folder)
    if not (folder / "state.json").is_file():
        found = latest_checkpoint(folder / CHECKPOINT_DIR)
        if found is None:
            raise FileNotFoundError(f"{folder} is neither a checkpoint nor a run with one.")
        folder = found
    path = folder / "ema.safetensors"
    if not (ema and path.is_file()):
        path = folder / "model.safetensors"
    load_model(model, str(path))
    return path


# --------------------------------------------------------------------------------------------
# optimizer state <-> safetensors + JSON


def optimizer_state_to_files(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``state.<param>.<name>``) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
        for group in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalar_state": scalars}


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an ``optimizer.state_dict()`` from :func:`optimizer_state_to_files` output."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalar_state"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------------------------
# random number generator states


def rng_state(generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG state of this process as (tensors, JSON): torch CPU, each CUDA device (if
    CUDA is initialised), numpy's and Python's global generators, and ``generator``."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    if generator is not None:
        tensors["generator"] = generator.get_state()
    algorithm, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss_next = random.getstate()
    meta = {
        "numpy": {
            "algorithm": algorithm,
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }
    return tensors, meta


def set_rng_state(
    tensors: dict[str, torch.Tensor], meta: dict, generator: torch.Generator | None = None
) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [
        tensors[k]
        for k in sorted(
            (k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1])
        )
    ]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if generator is not None:
        if "generator" not in tensors:
            raise ValueError("the checkpoint holds no state for the objective's generator.")
        generator.set_state(tensors["generator"])
    n = meta["numpy"]
    np.random.set_state(
        (
            n["algorithm"],
            tensors["numpy_keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
