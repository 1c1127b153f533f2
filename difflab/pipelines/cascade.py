"""Cascaded generation: a small base model and text-conditional super-resolution diffusion models
(Ho et al. 2022, "Cascaded Diffusion Models for High Fidelity Image Generation"; GLIDE's
upsampler, Nichol et al. 2022; Imagen, Saharia et al. 2022, Sec. 2.5).

A super-resolution (SR) model denoises a high-resolution image x_t given the prompt and a
low-resolution image z: z is upsampled (bilinear) to the model's size and concatenated to x_t as
extra input channels. **Noise-conditioning augmentation** (Ho et al. 2022, Sec. 3.2, Gaussian
augmentation; Imagen Sec. 2.5): during training z is corrupted to a random level s of the SR
model's own noise schedule, z_s = sqrt(abar_s) z + sqrt(1 - abar_s) eps (the forward process,
Ho et al. 2020, Eq. 4, applied at the low resolution), and s is a second input of the model
(added to its timestep embedding, :func:`~difflab.models.networks.text_conditional_unet`'s
``class_embed_type="timestep"``). At sampling time z is the base model's output, corrupted to a
fixed level (:attr:`SuperResolutionPipeline.aug_timestep`): the SR model then does not trust the
base model's artefacts any more than it learnt to trust noisy inputs.

:class:`CascadePipeline` chains a pixel-space :class:`~difflab.pipelines.text_to_image.
TextToImagePipeline` (the base, e.g. 16 px) and SR stages (16 -> 32, 32 -> 64); it has the
``latents``/``decode`` interface of a text-to-image pipeline, so ``difflab generate`` and the
evaluation code run it as they run any other (its "latents" are its final images).

Folders are difflab's own (diffusers has no pixel-space text-conditional SR pipeline): an SR
folder holds ``unet/`` (UNet2DConditionModel), ``scheduler/``, ``tokenizer/`` and
``model_index.json``; a cascade folder holds ``base/`` and one folder per stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from difflab import samplers
from difflab.diffusion import q_sample
from difflab.guidance import Guide, chain_guides, conditioned, sampling_threshold
from difflab.models.networks import call_denoiser
from difflab.models.text_encoder import PromptEncoder, load_text_encoder
from difflab.pipelines.text_to_image import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    TextToImagePipeline,
    images_to_pil,
    noise_per_image,
    schedule_from_diffusers_config,
)
from difflab.schedules import NoiseSchedule

SUPER_RESOLUTION = "DifflabSuperResolutionPipeline"
CASCADE = "DifflabCascadePipeline"
AUGMENTATION_SEED_OFFSET = 20_000_003  # augmentation noise of image i: seed + offset + i
STAGE_SEED_OFFSET = 1_000_003  # stage k of a cascade starts from seed + k * offset


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [B, C, S, S] -> [B, C, size, size] by area averaging (a box filter: each low-res
    pixel is the mean of the pixels it covers, as a sensor of coarser pixels would see it)."""
    return torch.nn.functional.interpolate(images, size=(size, size), mode="area")


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [B, C, s, s] -> [B, C, size, size], bilinear: the SR model's conditioning input."""
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False
    )


def augmented_condition(
    low_res: torch.Tensor,
    size: int,
    levels: torch.Tensor,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
) -> torch.Tensor:
    """The SR model's conditioning channels: ``low_res`` corrupted to noise level ``levels``
    [B] (integer timesteps of ``schedule``: z_s = sqrt(abar_s) z + sqrt(1 - abar_s) eps, Ho et al.
    2022, Sec. 3.2), then upsampled to ``size``. ``noise`` is eps, shaped like ``low_res``."""
    return upsample(q_sample(low_res, levels.to(low_res.device), schedule, noise), size)


def super_resolution_call(
    unet, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, levels: torch.Tensor,
    **conditions,
) -> torch.Tensor:  # fmt: skip
    """One SR denoiser call: ``unet(cat[x_t, condition], t, class_labels=levels, **conditions)``
    (the conditioning image as extra channels, the augmentation level as an extra embedding)."""
    x = torch.cat([x_t, condition.to(x_t)], dim=1)
    return call_denoiser(unet, x, t, class_labels=levels.to(x_t.device), **conditions)


def _check_level(level: int, schedule: NoiseSchedule) -> int:
    T = schedule.num_train_timesteps
    if not 0 <= int(level) < T:
        raise ValueError(
            f"the augmentation level is a timestep of the SR model's schedule, in [0, {T - 1}]; "
            f"got {level} (0 = no augmentation)."
        )
    return int(level)


@dataclass
class SuperResolutionPipeline:
    """A text-conditional SR diffusion model: ``upsample(prompts, low_res)`` -> images.

    ``unet`` is a UNet2DConditionModel whose input is the noisy image and the upsampled
    conditioning (``in_channels = 2 C``, ``out_channels = C``) and whose ``class_labels`` are
    the augmentation level; ``aug_timestep`` is the level used when sampling (a timestep of
    ``schedule``, 0 = none); ``clip_sample``: clip the implied x0 to [-1, 1] at every step
    unless a call chooses another ``threshold`` (the folder's diffusers scheduler flag)."""

    unet: torch.nn.Module
    prompt_encoder: PromptEncoder
    schedule: NoiseSchedule
    low_res_size: int
    aug_timestep: int = 100
    name: str = ""
    clip_sample: bool = False

    def __post_init__(self) -> None:
        c = self.unet.config
        if c.in_channels != 2 * c.out_channels or c.class_embed_type != "timestep":
            raise ValueError(
                "an SR U-Net takes its image and the upsampled conditioning as input channels "
                "(in_channels = 2 x out_channels) and the augmentation level as class_labels "
                '(class_embed_type="timestep"); build it with text_conditional_unet(in_channels='
                f'2 C, out_channels=C, class_embed_type="timestep"), got in_channels={c.in_channels}, '
                f"out_channels={c.out_channels}, class_embed_type={c.class_embed_type!r}"
            )
        if self.low_res_size >= self.size:
            raise ValueError(f"low_res_size {self.low_res_size} must be below {self.size}")
        _check_level(self.aug_timestep, self.schedule)

    @property
    def size(self) -> int:
        return self.unet.config.sample_size

    @property
    def channels(self) -> int:
        return self.unet.config.out_channels

    def denoiser(self):
        """``model(x_t, t, context, condition, levels)``: the conditional SR model."""

        def model(x, t, context, condition, levels):
            return super_resolution_call(
                self.unet, x, t, condition, levels, encoder_hidden_states=context
            )

        return model

    @torch.no_grad()
    def upsample(
        self,
        prompts: str | Sequence[str],
        low_res: torch.Tensor,
        steps: int = 20,
        guidance: float = DEFAULT_GUIDANCE,
        sampler: str = DEFAULT_SAMPLER,
        seed: int = 0,
        aug_timestep: int | None = None,
        guide: Guide | None = None,
        progress: bool = False,
        threshold: str | None = None,
        threshold_percentile: float = 0.995,
        **sampler_options,
    ) -> torch.Tensor:
        """Images ``[N, C, size, size]`` for low-resolution images ``low_res`` [N, C, s, s] in
        [-1, 1] and their prompts (one each, or one for all). The conditioning is augmented to
        ``aug_timestep`` (default :attr:`aug_timestep`); ``guidance`` is the classifier-free
        weight on the prompt (the conditioning image is in both branches); image i starts from
        the noise of seed ``seed + i``. ``threshold``: None = the folder's default
        (:attr:`clip_sample`), ``"none"``, ``"static"`` or ``"dynamic"``."""
        n, c = low_res.shape[:2]
        if low_res.shape[1:] != (self.channels, self.low_res_size, self.low_res_size):
            raise ValueError(
                f"{self.name or 'this SR model'} takes {self.channels}x{self.low_res_size}x"
                f"{self.low_res_size} images, got {tuple(low_res.shape[1:])}"
            )
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(prompts) == 1:
            prompts = prompts * n
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} low-resolution images")
        level = _check_level(self.aug_timestep if aug_timestep is None else aug_timestep,
                             self.schedule)  # fmt: skip
        device = next(self.unet.parameters()).device
        levels = torch.full((n,), level, dtype=torch.long, device=device)
        noise = noise_per_image(low_res.shape[1:], n, seed + AUGMENTATION_SEED_OFFSET)
        condition = augmented_condition(low_res.float().cpu(), self.size, levels.cpu(),
                                        self.schedule, noise).to(device)  # fmt: skip
        context = self.prompt_encoder(prompts)
        empty = self.prompt_encoder([""], warn=False).expand_as(context)
        cond = {"context": context, "condition": condition, "levels": levels}
        guided = conditioned(self.denoiser(), cond, {**cond, "context": empty}, guidance)
        guide = chain_guides(
            guide, sampling_threshold(threshold, self.clip_sample, threshold_percentile)
        )
        if guide is not None:
            guided = guide(guided, self.schedule)
        x_T = noise_per_image((c, self.size, self.size), n, seed).to(device)
        generator = torch.Generator().manual_seed(seed + 10_000_019)
        return samplers.sample(
            sampler, guided, self.schedule, x_T, steps, generator, progress=progress,
            **sampler_options,
        )  # fmt: skip

    def save_pretrained(self, folder: str | Path, include_text_encoder: bool = False) -> None:
        """Write ``unet/``, ``scheduler/``, ``tokenizer/`` and ``model_index.json`` (the frozen
        text encoder is loaded from its package; ``include_text_encoder`` also writes it)."""
        from diffusers import DDIMScheduler

        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        DDIMScheduler(
            **self.schedule.to_diffusers_config(), clip_sample=self.clip_sample
        ).save_pretrained(folder / "scheduler")
        self.prompt_encoder.tokenizer.save_pretrained(folder / "tokenizer")
        if include_text_encoder:
            self.prompt_encoder.text_encoder.save_pretrained(
                folder / "text_encoder", safe_serialization=True
            )
        index = {
            "_class_name": SUPER_RESOLUTION,
            "unet": ["diffusers", type(self.unet).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "low_res_size": self.low_res_size,
            "aug_timestep": self.aug_timestep,
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, prompt_encoder: PromptEncoder | None = None
    ) -> SuperResolutionPipeline:
        from diffusers import UNet2DConditionModel

        folder = Path(folder)
        index = read_pipeline_index(folder, SUPER_RESOLUTION)
        if prompt_encoder is None:
            encoder = folder / "text_encoder"
            prompt_encoder = PromptEncoder(
                *load_text_encoder(
                    encoder if (encoder / "config.json").is_file() else None, folder / "tokenizer"
                )
            )
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        return cls(
            unet=UNet2DConditionModel.from_pretrained(
                folder / "unet", torch_dtype=torch.float32, use_safetensors=True
            ).eval(),
            prompt_encoder=prompt_encoder,
            schedule=schedule_from_diffusers_config(config),
            low_res_size=int(index["low_res_size"]),
            aug_timestep=int(index.get("aug_timestep", 0)),
            name=folder.name,
            clip_sample=bool(config.get("clip_sample", False)),
        )


def read_pipeline_index(folder: Path, class_name: str) -> dict:
    """``model_index.json`` of a difflab pipeline folder of class ``class_name`` (else an error
    naming what the folder holds)."""
    path = folder / "model_index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a pipeline folder (no model_index.json)")
    index = json.loads(path.read_text())
    if index.get("_class_name") != class_name:
        raise ValueError(
            f"{folder} holds a {index.get('_class_name')!r}, not a {class_name}; load it with "
            "difflab.load_pipeline"
        )
    return index


@dataclass
class CascadePipeline:
    """A pixel-space base model followed by SR stages: ``pipeline(prompts)`` -> PIL images at
    the last stage's size. Steps, sampler, guidance and ``guide`` (e.g. dynamic thresholding,
    which Imagen applies at every stage) apply to every stage; ``aug_timesteps`` overrides the
    stages' augmentation levels (one per stage). ``threshold`` (None: each stage's folder
    default, see :attr:`clip_sample`) applies to every stage."""

    base: TextToImagePipeline
    stages: list[SuperResolutionPipeline] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.base.vae is not None:
            raise ValueError(
                "a cascade's base model must be pixel-space (vae=None): its images are what the "
                "first SR stage takes"
            )
        size = self.base.latent_shape[-1]
        for stage in self.stages:
            if stage.low_res_size != size:
                raise ValueError(
                    f"stage {stage.name or type(stage).__name__} takes {stage.low_res_size}-px "
                    f"images but the stage before it makes {size}-px ones"
                )
            size = stage.size

    @classmethod
    def extended(cls, base, stage: SuperResolutionPipeline, name: str = "") -> CascadePipeline:
        """``base`` (a pixel text-to-image pipeline or a cascade) followed by ``stage``."""
        if isinstance(base, CascadePipeline):
            return cls(base.base, [*base.stages, stage], name)
        return cls(base, [stage], name)

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.base.prompt_encoder

    @property
    def size(self) -> int:
        return self.stages[-1].size if self.stages else self.base.latent_shape[-1]

    @property
    def clip_sample(self) -> bool:
        """Whether every stage clips its implied x0 by default."""
        return all(stage.clip_sample for stage in [self.base, *self.stages])

    def sampling_settings(self, sampler=None, guidance=None, **sampler_options):
        """The base model's (see :meth:`TextToImagePipeline.sampling_settings`)."""
        return self.base.sampling_settings(sampler, guidance, **sampler_options)

    @torch.no_grad()
    def latents(
        self,
        prompts: str | Sequence[str],
        num_images_per_prompt: int = 1,
        steps: int = 20,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
        guide: Guide | None = None,
        aug_timesteps: Sequence[int] | None = None,
        progress: bool = False,
        threshold: str | None = None,
        threshold_percentile: float = 0.995,
        **sampler_options,
    ) -> torch.Tensor:
        """The final images ``[N, C, size, size]`` in [-1, 1] (N = prompts x images per prompt,
        grouped by prompt): the base model's samples, then each stage's upsampling of the one
        before, each from its own seeds (stage k: ``seed + k * STAGE_SEED_OFFSET``)."""
        sampler, guidance, sampler_options = self.sampling_settings(
            sampler, guidance, **sampler_options
        )
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        levels = list(aug_timesteps) if aug_timesteps is not None else [None] * len(self.stages)
        if len(levels) != len(self.stages):
            raise ValueError(f"got {len(levels)} augmentation levels for {len(self.stages)} stages")
        images = self.base.decode(
            self.base.latents(
                prompts, num_images_per_prompt, steps, guidance, sampler, seed,
                progress=progress, guide=guide, threshold=threshold,
                threshold_percentile=threshold_percentile, **sampler_options,
            )
        )  # fmt: skip
        expanded = [p for p in prompts for _ in range(num_images_per_prompt)]
        for k, (stage, level) in enumerate(zip(self.stages, levels, strict=True)):
            images = stage.upsample(
                expanded, images, steps, guidance, sampler, seed + (k + 1) * STAGE_SEED_OFFSET,
                aug_timestep=level, guide=guide, progress=progress, threshold=threshold,
                threshold_percentile=threshold_percentile, **sampler_options,
            ).clamp(-1, 1)  # fmt: skip
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The cascade's samples are its images."""
        return latents.clamp(-1, 1)

    def __call__(self, prompts, num_images_per_prompt: int = 1, **options) -> list[Image.Image]:
        return images_to_pil(self.latents(prompts, num_images_per_prompt, **options))

    def save_pretrained(self, folder: str | Path, include_text_encoder: bool = False) -> None:
        """``base/`` (a pixel text-to-image folder), ``stage-1/``, ... and ``model_index.json``."""
        folder = Path(folder)
        self.base.save_pretrained(folder / "base", include_text_encoder=include_text_encoder)
        names = [f"stage-{k + 1}" for k in range(len(self.stages))]
        for name, stage in zip(names, self.stages, strict=True):
            stage.save_pretrained(folder / name, include_text_encoder=include_text_encoder)
        index = {"_class_name": CASCADE, "base": "base", "stages": names}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CascadePipeline:
        folder = Path(folder)
        index = read_pipeline_index(folder, CASCADE)
        base = TextToImagePipeline.from_pretrained(folder / index["base"])
        stages = [
            SuperResolutionPipeline.from_pretrained(folder / name, base.prompt_encoder)
            for name in index["stages"]
        ]
        return cls(base, stages, name=folder.name)
