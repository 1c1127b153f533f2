"""unCLIP (DALL-E 2, Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP
Latents"): text -> CLIP text embedding -> **diffusion prior** -> CLIP image embedding ->
**decoder** -> image, on the shapes world with shapes-clip as the frozen CLIP.

- **Prior** (Sec. 2.1): a diffusion model over the ``embed_dim``-dimensional CLIP image
  embedding, conditioned on the CLIP text embedding, predicting the clean embedding directly
  (x0-prediction) - :func:`~difflab.models.networks.embedding_prior` (diffusers'
  ``PriorTransformer``). It works on per-dimension standardised embeddings (the statistics are
  stored in the prior's ``clip_mean``/``clip_std``); its samples are de-standardised and
  L2-normalised onto CLIP's sphere. Classifier-free guidance on the text (the null condition
  is the CLIP embedding of the empty prompt).
- **Decoder** (Sec. 2.1; GLIDE-style): a U-Net conditioned on the image embedding, projected to
  context tokens for cross-attention and added to the timestep embedding
  (:func:`~difflab.models.networks.text_conditional_unet` with ``image_embedding_dim``); pixel
  space or the latents of a VAE. Classifier-free guidance drops the embedding to zeros.
- **Variations** (Sec. 3.1, Fig. 3): encode an image with CLIP, decode its embedding from other
  seeds. **Interpolations** (Sec. 3.2, Fig. 4): decode slerp(z_a, z_b, theta) with the decoder's
  seed fixed along the row.

Without a prior (``prior=None``, or ``use_prior=False``) text-to-image decodes the CLIP *text*
embedding directly - the baseline unCLIP's prior is compared with (Sec. 5.1, Fig. 7, "caption").

A folder holds ``unet/`` (the decoder), ``scheduler/``, ``vae/`` (latent decoders only),
``prior/`` and ``prior_scheduler/`` (once a prior is trained), ``clip/`` (the CLIP model, see
:func:`~difflab.models.clip.save_clip_model`) and ``model_index.json``
(``_class_name: DifflabUnCLIPPipeline``, sampling defaults under ``_difflab_sampling``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from difflab import samplers
from difflab.guidance import Guide, conditioned
from difflab.models.networks import call_denoiser
from difflab.pipelines.cascade import read_pipeline_index
from difflab.pipelines.text_to_image import (
    DEFAULT_SAMPLER,
    SAMPLING_KEY,
    checked_steps,
    decode_latents,
    images_to_pil,
    noise_per_image,
    schedule_from_diffusers_config,
)
from difflab.schedules import NoiseSchedule

UNCLIP = "DifflabUnCLIPPipeline"
PRIOR_SEED_OFFSET = 30_000_001  # the prior's starting noise for image i: seed + offset + i
DEFAULTS = {"sampler": DEFAULT_SAMPLER, "guidance": 3.0, "prior_steps": 25, "prior_guidance": 3.0}


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between unit vectors ``a`` and ``b`` [D] at
    ``weights`` [K] in [0, 1]: ``[K, D]`` unit vectors on the great circle from a (0) to b (1),
    ``(sin((1 - w) omega) a + sin(w omega) b) / sin(omega)`` with ``cos(omega) = a . b``."""
    a, b = (torch.nn.functional.normalize(v.double(), dim=-1) for v in (a, b))
    omega = torch.arccos((a * b).sum().clamp(-1.0, 1.0))
    w = torch.as_tensor(weights, dtype=torch.float64)[:, None]
    if omega < 1e-6:  # (nearly) the same direction: linear is exact enough
        return ((1 - w) * a + w * b).float()
    return ((torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)).float()


def decoder_call(unet, x_t: torch.Tensor, t: torch.Tensor, image_embeds: torch.Tensor):
    """One decoder call: the U-Net conditioned on CLIP image embeddings [B, D] only."""
    return call_denoiser(
        unet, x_t, t, encoder_hidden_states=None,
        added_cond_kwargs={"image_embeds": image_embeds.to(x_t)},
    )  # fmt: skip


@dataclass
class UnCLIPPipeline:
    """``pipeline(prompts)`` -> PIL images through prior and decoder; :meth:`variations`,
    :meth:`interpolate`. ``defaults``: sampler and decoder guidance, ``prior_steps`` and
    ``prior_guidance`` (see :data:`DEFAULTS`)."""

    unet: torch.nn.Module  # the decoder
    vae: torch.nn.Module | None
    schedule: NoiseSchedule
    clip: torch.nn.Module
    prior: torch.nn.Module | None = None
    prior_schedule: NoiseSchedule | None = None
    name: str = ""
    defaults: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.prior is None) != (self.prior_schedule is None):
            raise ValueError("give the prior together with its noise schedule (or neither)")

    # ---- pieces

    @property
    def prompt_encoder(self):
        """The CLIP model's frozen text encoder (what prompts go through first)."""
        return self.clip.text_encoder()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def setting(self, key: str):
        return self.defaults.get(key, DEFAULTS[key])

    def sampling_settings(
        self, sampler: str | None = None, guidance: float | None = None, **sampler_options
    ) -> tuple[str, float, dict]:
        """The decoder's (sampler, guidance, options): what a call names, else :attr:`defaults`."""
        guidance = self.setting("guidance") if guidance is None else guidance
        return sampler or self.setting("sampler"), float(guidance), sampler_options

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings ``[N, D]`` (unit) of clean images in [-1, 1]."""
        return self.clip.encode_image(images.to(next(self.clip.parameters())))

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings ``[N, D]`` (unit)."""
        return self.clip.encode_text(list(prompts), warn=False)

    # ---- the prior

    @torch.no_grad()
    def prior_embeddings(
        self,
        text_embeddings: torch.Tensor,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Sample one CLIP image embedding per text embedding [N, D] -> [N, D] (unit): the
        prior's x0 samples, de-standardised and normalised; classifier-free guidance
        ``guidance`` (default ``prior_guidance``) against the empty prompt's embedding."""
        if self.prior is None:
            raise ValueError(
                f"{self.name or 'this unCLIP pipeline'} has no prior yet: train one (`difflab "
                "train shapes-unclip-prior`), or decode text embeddings directly (use_prior=False)"
            )
        steps = self.setting("prior_steps") if steps is None else checked_steps(steps)
        guidance = self.setting("prior_guidance") if guidance is None else guidance
        n, device = text_embeddings.shape[0], next(self.prior.parameters()).device
        cond = text_embeddings.to(device)

        def model(x, t, proj):
            return call_denoiser(self.prior, x, t, proj_embedding=proj)

        empty = self.text_embeddings([""]).to(device).expand_as(cond)
        guided = conditioned(model, cond, empty, guidance)
        x_T = noise_per_image((cond.shape[1],), n, seed + PRIOR_SEED_OFFSET).to(device)
        generator = torch.Generator().manual_seed(seed + PRIOR_SEED_OFFSET + 10_000_019)
        x0 = samplers.sample(
            sampler or DEFAULT_SAMPLER, guided, self.prior_schedule, x_T, steps, generator
        )
        return torch.nn.functional.normalize(self.prior.post_process_latents(x0), dim=-1)

    # ---- the decoder

    @torch.no_grad()
    def decoder_latents(
        self,
        image_embeddings: torch.Tensor,
        steps: int = 20,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int | Sequence[torch.Generator] = 0,
        guide: Guide | None = None,
        progress: bool = False,
        **sampler_options,
    ) -> torch.Tensor:
        """Decode CLIP image embeddings [N, D] into latents (images for a pixel decoder), image
        i from the noise of seed ``seed + i`` (or the i-th generator); classifier-free guidance
        ``guidance`` against the zero embedding."""
        sampler, guidance, sampler_options = self.sampling_settings(
            sampler, guidance, **sampler_options
        )
        device = next(self.unet.parameters()).device
        cond = image_embeddings.to(device)

        def model(x, t, embeds):
            return decoder_call(self.unet, x, t, embeds)

        guided = conditioned(model, cond, torch.zeros_like(cond), guidance)
        if guide is not None:
            guided = guide(guided, self.schedule)
        x_T = noise_per_image(self.latent_shape, cond.shape[0], seed).to(device)
        noise_seed = seed if isinstance(seed, int) else 0
        generator = torch.Generator().manual_seed(noise_seed + 10_000_019)
        return samplers.sample(
            sampler, guided, self.schedule, x_T, steps, generator, progress=progress,
            **sampler_options,
        )  # fmt: skip

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1] (:func:`decode_latents`); a pixel decoder's samples are
        the images."""
        return decode_latents(self.vae, latents)

    # ---- text to image, variations, interpolations

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
        use_prior: bool | None = None,
        prior_steps: int | None = None,
        prior_guidance: float | None = None,
        progress: bool = False,
        **sampler_options,
    ) -> torch.Tensor:
        """Text to latents [N, ...] (grouped by prompt): CLIP text embedding -> prior (each
        image its own prior sample) -> decoder. ``use_prior=False`` (the default without a
        prior) decodes the text embedding itself."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        text = self.text_embeddings(prompts).repeat_interleave(num_images_per_prompt, 0)
        if use_prior is None:
            use_prior = self.prior is not None
        embeddings = (
            self.prior_embeddings(text, prior_steps, prior_guidance, seed=seed)
            if use_prior
            else text
        )
        return self.decoder_latents(
            embeddings, steps, guidance, sampler, seed, guide, progress, **sampler_options
        )

    def __call__(self, prompts, num_images_per_prompt: int = 1, **options) -> list[Image.Image]:
        return images_to_pil(self.decode(self.latents(prompts, num_images_per_prompt, **options)))

    @torch.no_grad()
    def variations(
        self, images: torch.Tensor, num_variations: int = 4, steps: int = 20,
        guidance: float | None = None, sampler: str | None = None, seed: int = 0, **options,
    ) -> torch.Tensor:  # fmt: skip
        """``num_variations`` images per input image [N, C, H, W] in [-1, 1], grouped by input
        (DALL-E 2, Fig. 3): each input's CLIP image embedding decoded from seeds
        ``seed + i``."""
        embeddings = self.encode_images(images).repeat_interleave(num_variations, 0)
        latents = self.decoder_latents(embeddings, steps, guidance, sampler, seed, **options)
        return self.decode(latents)

    @torch.no_grad()
    def interpolate(
        self, image_a: torch.Tensor, image_b: torch.Tensor, points: int = 5, steps: int = 20,
        guidance: float | None = None, sampler: str | None = None, seed: int = 0, **options,
    ) -> torch.Tensor:  # fmt: skip
        """``points`` images decoded from slerp(z_a, z_b, theta), theta evenly spaced in [0, 1]
        (DALL-E 2, Fig. 4), all from the decoder noise of seed ``seed``. Images are [C, H, W]
        or [1, C, H, W]."""
        if points < 2:
            raise ValueError(f"an interpolation needs at least 2 points, got {points}")
        z = self.encode_images(torch.stack([image_a.reshape(image_a.shape[-3:]),
                                            image_b.reshape(image_b.shape[-3:])]))  # fmt: skip
        path = slerp(z[0], z[1], torch.linspace(0, 1, points))
        generators = [torch.Generator().manual_seed(seed) for _ in range(points)]
        return self.decode(self.decoder_latents(path, steps, guidance, sampler, generators,
                                                **options))  # fmt: skip

    # ---- storage

    def save_pretrained(self, folder: str | Path, include_text_encoder: bool = False) -> None:
        """Write the folder described in the module docstring (the frozen text encoder ships in
        its package and is never written; ``include_text_encoder`` is accepted for
        :func:`difflab.zoo.ship`)."""
        from diffusers import DDIMScheduler

        from difflab.models.clip import save_clip_model

        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        DDIMScheduler(**self.schedule.to_diffusers_config(), clip_sample=False).save_pretrained(
            folder / "scheduler"
        )
        index = {
            "_class_name": UNCLIP,
            "unet": ["diffusers", type(self.unet).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "vae": [None, None],
            "prior": [None, None],
            "clip": ["difflab", "DifflabCLIP"],
            SAMPLING_KEY: {**DEFAULTS, **self.defaults},
        }
        if self.vae is not None:
            self.vae.save_pretrained(folder / "vae", safe_serialization=True)
            index["vae"] = ["diffusers", type(self.vae).__name__]
        if self.prior is not None:
            self.prior.save_pretrained(folder / "prior", safe_serialization=True)
            DDIMScheduler(
                **self.prior_schedule.to_diffusers_config(), clip_sample=False
            ).save_pretrained(folder / "prior_scheduler")
            index["prior"] = ["diffusers", type(self.prior).__name__]
        save_clip_model(self.clip, folder / "clip")
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> UnCLIPPipeline:
        from diffusers import AutoencoderKL, PriorTransformer, UNet2DConditionModel

        from difflab.models.clip import load_clip_model

        folder = Path(folder)
        index = read_pipeline_index(folder, UNCLIP)

        def scheduler(name: str) -> NoiseSchedule:
            config = json.loads((folder / name / "scheduler_config.json").read_text())
            return schedule_from_diffusers_config(config)

        def weights(model_class, name: str):
            return model_class.from_pretrained(
                folder / name, torch_dtype=torch.float32, use_safetensors=True
            ).eval()

        has_prior = index.get("prior", [None])[0] is not None
        return cls(
            unet=weights(UNet2DConditionModel, "unet"),
            vae=weights(AutoencoderKL, "vae") if index.get("vae", [None])[0] else None,
            schedule=scheduler("scheduler"),
            clip=load_clip_model(folder / "clip", resize=True),
            prior=weights(PriorTransformer, "prior") if has_prior else None,
            prior_schedule=scheduler("prior_scheduler") if has_prior else None,
            name=folder.name,
            defaults=dict(index.get(SAMPLING_KEY) or {}),
        )
