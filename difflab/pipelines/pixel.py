"""Pixel-space diffusion (Ho et al. 2020): unconditional or class-conditional, no autoencoder.

Class-conditional models reserve class id ``num_classes`` as the "null" class that classifier-free
guidance needs (Ho & Salimans 2022: the label is dropped to it during training). Folders follow the
diffusers layout: ``unet/`` (UNet2DModel) and ``scheduler/``; an unconditional folder declares
itself a ``DDPMPipeline``, which plain diffusers loads and runs as it is.

A folder whose scheduler sets diffusers' ``clip_sample`` flag has its implied x0 clipped to
[-1, 1] at every step by default, as DDPM's sampler does (Ho et al. 2020's code; plain diffusers
does the same with that folder): briefly trained pixel models drift out of range without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from difflab import samplers
from difflab.guidance import Guide, chain_guides, classifier_free_guidance, sampling_threshold
from difflab.pipelines.text_to_image import images_to_pil, schedule_from_diffusers_config
from difflab.schedules import NoiseSchedule

CLASS_CONDITIONAL = "DifflabClassConditionalPipeline"


@dataclass
class PixelPipeline:
    """``pipeline(labels or count, steps=..., guidance=...)`` -> PIL images. ``clip_sample``:
    clip the implied x0 to [-1, 1] at every step unless a call chooses another ``threshold``."""

    unet: torch.nn.Module
    schedule: NoiseSchedule
    class_names: list[str] = field(default_factory=list)  # empty: unconditional
    name: str = ""
    clip_sample: bool = False

    @property
    def null_class(self) -> int:
        return len(self.class_names)

    def class_index(self, label: int | str) -> int:
        """A class id from an id or a class name; a clear error lists the names."""
        if isinstance(label, int) and 0 <= label < len(self.class_names):
            return label
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        raise ValueError(
            f"unknown class {label!r}; this model knows ids 0..{len(self.class_names) - 1} or "
            f"names {', '.join(self.class_names)}."
        )

    @torch.no_grad()
    def sample(
        self,
        labels: Sequence[int | str] | int,
        steps: int = 50,
        guidance: float = 1.0,
        sampler: str = "ddim",
        seed: int = 0,
        guide: Guide | None = None,
        threshold: str | None = None,
        threshold_percentile: float = 0.995,
        **sampler_options,
    ) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1]: one per label (conditional; ``None`` is the null
        class, i.e. the unconditional model) or ``labels`` of them (an int, unconditional).
        Image i starts from the noise of seed ``seed + i``. ``guide`` wraps the (classifier-free
        guided) denoiser, e.g. :func:`difflab.guidance.classifier_guide`; then the implied x0 is
        thresholded: ``threshold`` None = the folder's default (:attr:`clip_sample`), ``"none"``,
        ``"static"`` or ``"dynamic"`` (:func:`~difflab.guidance.sampling_threshold`)."""
        c = self.unet.config
        if isinstance(labels, int):
            if self.class_names:
                raise ValueError("this model is class-conditional: pass a list of classes.")
            count, class_ids = labels, None
        else:
            if not self.class_names:
                raise ValueError("this model is unconditional: pass the number of images.")
            class_ids = torch.tensor(
                [self.null_class if label is None else self.class_index(label) for label in labels]
            )
            count = len(class_ids)
        device = next(self.unet.parameters()).device
        x_T = torch.cat(
            [
                torch.randn((1, c.in_channels, c.sample_size, c.sample_size),
                            generator=torch.Generator().manual_seed(seed + i))
                for i in range(count)
            ]
        ).to(device)  # fmt: skip

        def model(x, t, class_labels=None):
            return self.unet(x, t, class_labels=class_labels).sample

        if class_ids is None:
            denoiser = model
        elif guidance != 1.0 and bool((class_ids != self.null_class).any()):
            null = torch.full_like(class_ids, self.null_class)
            denoiser = classifier_free_guidance(
                model, class_ids.to(device), null.to(device), guidance
            )
        else:

            def denoiser(x, t):
                return model(x, t, class_ids.to(device))

        guide = chain_guides(
            guide, sampling_threshold(threshold, self.clip_sample, threshold_percentile)
        )
        if guide is not None:
            denoiser = guide(denoiser, self.schedule)
        generator = torch.Generator().manual_seed(seed + 10_000_019)
        x0 = samplers.sample(
            sampler, denoiser, self.schedule, x_T, steps, generator, **sampler_options
        )
        return x0.clamp(-1, 1)

    def sampling_settings(
        self, sampler: str | None = None, guidance: float | None = None, **sampler_options
    ) -> tuple[str, float, dict]:
        """The (sampler, guidance, options) a call naming none runs: dpmpp_2m, classifier-free
        guidance weight 2 for a class-conditional model and 1 (none) for an unconditional one."""
        if guidance is None:
            guidance = 2.0 if self.class_names else 1.0
        return sampler or "dpmpp_2m", float(guidance), sampler_options

    def __call__(
        self, labels, steps: int = 50, guidance: float = 1.0, **options
    ) -> list[Image.Image]:
        return images_to_pil(self.sample(labels, steps, guidance, **options))

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``unet/``, ``scheduler/`` and ``model_index.json`` (safetensors, JSON)."""
        from diffusers import DDIMScheduler

        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        DDIMScheduler(
            num_train_timesteps=self.schedule.num_train_timesteps,
            trained_betas=self.schedule.betas.float().tolist(),
            prediction_type=self.schedule.prediction_type,
            clip_sample=self.clip_sample,
        ).save_pretrained(folder / "scheduler")
        index = {
            "_class_name": CLASS_CONDITIONAL if self.class_names else "DDPMPipeline",
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDIMScheduler"],
        }
        if self.class_names:
            index["class_names"] = list(self.class_names)
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PixelPipeline:
        from diffusers import UNet2DModel

        folder = Path(folder)
        index = json.loads((folder / "model_index.json").read_text())
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        return cls(
            unet=UNet2DModel.from_pretrained(
                folder / "unet", torch_dtype=torch.float32, use_safetensors=True
            ).eval(),
            schedule=schedule_from_diffusers_config(config),
            class_names=list(index.get("class_names", [])),
            name=folder.name,
            clip_sample=bool(config.get("clip_sample", False)),
        )
