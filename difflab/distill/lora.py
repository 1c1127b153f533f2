"""LCM-LoRA (Luo et al. 2023b, "LCM-LoRA: A Universal Stable-Diffusion Acceleration Module"):
latent consistency distillation learnt as a low-rank adapter (LoRA, Hu et al. 2022: W + B A
with rank r, scaled by alpha / r, B = 0 at the start) on the frozen teacher.

The adapter is made and stored with ``peft`` and diffusers' LoRA format - a
``pytorch_lora_weights.safetensors`` that plain diffusers loads with
``pipe.load_lora_weights(folder)`` - plus ``difflab_lora.json`` with the sampling settings the
adapter needs (the ``lcm`` sampler on the grid it was distilled on, guidance 1: the guided
teacher is already distilled into it). Loading attaches the adapter to a teacher pipeline and by
default fuses it into the adapted layers' weights (W + (alpha / r) B A, diffusers' ``fuse_lora``),
so each step is one plain U-Net call; the teacher's weights are kept aside, and unloading removes
the LoRA layers and puts them back, so the teacher returns exactly (unmerging by subtraction
would leave rounding).

Written here rather than taken whole from diffusers: its loaders work on its own pipelines,
while a difflab pipeline holds the U-Net directly; the U-Net's own ``load_lora_adapter`` /
``unload_lora`` (diffusers' peft integration) do the work.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from difflab.models.networks import call_denoiser

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' name for a pipeline's LoRA
SETTINGS_FILE = "difflab_lora.json"
ADAPTER_NAME = "lcm-lora"
# The layers the LCM-LoRA code adapts in SD's U-Net: attention projections, the transformer
# blocks' in/out and feed-forward projections, the ResNet convolutions and time projections.
DEFAULT_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
    "time_emb_proj",
)  # fmt: skip


def add_lora(
    net: nn.Module, rank: int = 16, alpha: float | None = None, targets=DEFAULT_TARGETS
) -> nn.Module:
    """Freeze ``net`` and attach a trainable LoRA adapter (peft) of ``rank`` to the ``targets``
    it has (scale alpha / rank, alpha defaulting to the rank). B starts at zero, so the adapted
    network computes exactly what ``net`` did."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"the LoRA rank must be at least 1, got {rank}.")
    names = [name for name, _ in net.named_modules()]
    present = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not present:
        raise ValueError(
            f"none of the LoRA target layers {list(targets)} is in this {type(net).__name__}; "
            "name layers it has."
        )
    net.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha or rank, target_modules=present, init_lora_weights=True
    )
    net.add_adapter(config)
    return net


class AdapterFreeView(nn.Module):
    """The frozen network under a LoRA student, as its teacher: calling it runs the adapted
    network with its adapters switched off. It registers no parameters (the adapted network is
    held outside nn.Module's registry), so checkpoints store the weights once."""

    def __init__(self, adapted: nn.Module) -> None:
        super().__init__()
        self._adapted = (adapted,)  # a tuple: not registered as a sub-module

    def forward(self, x: torch.Tensor, t: torch.Tensor, **conditions) -> torch.Tensor:
        with adapters_disabled(self._adapted[0]):
            return call_denoiser(self._adapted[0], x, t, **conditions)


@contextmanager
def adapters_disabled(net: nn.Module):
    """Run a block with ``net``'s adapters switched off (the base network)."""
    net.disable_adapters()
    try:
        yield net
    finally:
        net.enable_adapters()


def is_lora_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds an adapter written by :func:`save_lora`."""
    folder = Path(folder)
    return (folder / LORA_WEIGHTS).is_file() and (folder / SETTINGS_FILE).is_file()


def lora_settings(folder: str | Path) -> dict:
    """The settings stored with an adapter (its sampling defaults, and the ``teacher`` it was
    distilled from when the recipe recorded it)."""
    return json.loads((Path(folder) / SETTINGS_FILE).read_text())


def save_lora(
    net: nn.Module,
    folder: str | Path,
    settings: dict,
    adapter: str = "default",
    dtype: torch.dtype | None = None,
    extra: dict[str, str | bytes] | None = None,
) -> Path:
    """Write ``net``'s adapter to ``folder`` as diffusers' ``pytorch_lora_weights.safetensors``
    (with its LoRA config in the safetensors metadata; cast to ``dtype`` if given, e.g. fp16 for
    shipping - loading casts back to the network's dtype) and ``settings`` as
    ``difflab_lora.json``, plus ``extra`` files (name -> text or bytes, e.g. a model card);
    written in a staging folder and renamed, so ``folder`` is complete or absent (an existing
    LoRA folder is replaced, any other non-empty folder refused)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    from difflab.storage import write_folder_atomically

    layers = get_peft_model_state_dict(net, adapter_name=adapter)
    if dtype is not None:
        layers = {name: tensor.to(dtype) for name, tensor in layers.items()}

    def fill(staging: Path) -> None:
        StableDiffusionPipeline.save_lora_weights(
            staging,
            unet_lora_layers=layers,
            unet_lora_adapter_metadata=net.peft_config[adapter].to_dict(),
            weight_name=LORA_WEIGHTS,
        )
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        for name, content in (extra or {}).items():
            if isinstance(content, bytes):
                (staging / name).write_bytes(content)
            else:
                (staging / name).write_text(content)

    return write_folder_atomically(Path(folder), fill, is_lora_folder, "LoRA adapter")


def load_lcm_lora(pipeline, folder: str | Path, fuse: bool = True):
    """Attach the LCM-LoRA in ``folder`` to a teacher ``pipeline`` (a
    :class:`~difflab.pipelines.text_to_image.TextToImagePipeline`) and make its sampling
    settings the pipeline's defaults (``lcm`` sampler, guidance 1). With ``fuse`` the adapter
    is merged into the weights, W + (alpha / r) B A (Hu et al. 2022, Sec. 4.1: merged, LoRA adds
    no inference latency; the LoRA branches no longer run: 1.4x faster on the 2-core CPU,
    ``benchmarks/lora_fusing.py``; outputs agree with the unfused adapter to float rounding) and
    a copy of the teacher's weights is kept for :func:`unload_lcm_lora` (it costs the U-Net's
    size in memory; ``fuse=False`` does without it). Returns the pipeline."""
    folder = Path(folder)
    if not is_lora_folder(folder):
        raise FileNotFoundError(
            f"{folder} is not an LCM-LoRA folder (it needs {LORA_WEIGHTS} and {SETTINGS_FILE}); "
            "train one with `difflab train distill-lcm-lora --out DIR` (it writes DIR/lora)."
        )
    if ADAPTER_NAME in (getattr(pipeline.unet, "peft_config", None) or {}):
        raise ValueError("an LCM-LoRA is already loaded; unload_lcm_lora(pipeline) first.")
    settings = lora_settings(folder)
    unet = pipeline.unet
    teacher_weights = (
        {k: v.detach().clone() for k, v in unet.state_dict().items()} if fuse else None
    )
    try:
        unet.load_lora_adapter(
            str(folder), prefix="unet", adapter_name=ADAPTER_NAME, weight_name=LORA_WEIGHTS,
            use_safetensors=True,
        )  # fmt: skip
    except RuntimeError as error:  # peft's size mismatch: an adapter of another U-Net
        teacher = settings.get("teacher", "its teacher")
        raise ValueError(
            f"the LoRA in {folder} does not fit this model's U-Net (it was distilled from "
            f"{teacher}; attach it to that model). {str(error).splitlines()[0]}"
        ) from None
    if fuse:
        unet.fuse_lora(adapter_names=[ADAPTER_NAME])
    pipeline.teacher_weights = teacher_weights
    pipeline.defaults_without_lora = pipeline.defaults
    pipeline.defaults = settings["sampling"]
    return pipeline


def unload_lcm_lora(pipeline):
    """Remove the LoRA layers from ``pipeline``'s U-Net - its weights and outputs are the
    teacher's again, bit for bit - and restore its sampling defaults. Returns the pipeline."""
    if not getattr(pipeline.unet, "peft_config", None):
        raise ValueError("no LoRA is loaded on this pipeline; load one with load_lcm_lora.")
    pipeline.unet.unload_lora()
    if getattr(pipeline, "teacher_weights", None) is not None:  # fused: the merged W + BA stays
        pipeline.unet.load_state_dict(pipeline.teacher_weights)
        pipeline.teacher_weights = None
    pipeline.defaults = getattr(pipeline, "defaults_without_lora", {})
    return pipeline
