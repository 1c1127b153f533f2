"""Text-to-image latent diffusion (Rombach et al. 2022), stored in the diffusers folder layout.

A :class:`TextToImagePipeline` holds a VAE, a text-conditional U-Net, the frozen text encoder and a
noise schedule. Sampling is difflab's own (any sampler of :mod:`difflab.samplers`, guidance from
:mod:`difflab.guidance`); saving writes a folder that plain diffusers loads as a
``StableDiffusionPipeline`` (model_index.json, one sub-folder per component, safetensors), and with
the DDIM scheduler and the same generators both libraries produce the same latents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difflab import samplers
from difflab.guidance import (
    EVERY_STEP,
    Guide,
    chain_guides,
    check_guidance_interval,
    classifier_free_guidance,
    conditional_model,
    resolved_threshold,
    sampling_threshold,
)
from difflab.models.networks import call_denoiser, guidance_condition, guidance_input_dim
from difflab.models.text_encoder import PromptEncoder, load_text_encoder
from difflab.schedules import NoiseSchedule

DENOISER_CLASSES = ("UNet2DConditionModel", "PixArtTransformer2DModel")
PIXEL_TEXT_TO_IMAGE = "DifflabPixelTextToImagePipeline"  # model_index.json of pixel-space folders
SAMPLING_KEY = "_difflab_sampling"  # in model_index.json; diffusers skips keys starting with "_"
DEFAULT_SAMPLER, DEFAULT_GUIDANCE, DEFAULT_STEPS = "dpmpp_2m", 5.0, 20


def checked_steps(steps) -> int:
    """``steps`` as an int; a ValueError naming the fix when it is not a whole number >= 1 (a
    0 must not fall back to the default, as ``steps or default`` would)."""
    if isinstance(steps, bool) or not float(steps).is_integer() or steps < 1:
        raise ValueError(f"steps must be a whole number of at least 1, got {steps!r}.")
    return int(steps)


def sampling_defaults_from_scheduler(config: dict) -> dict:
    """The sampling defaults a diffusers scheduler config implies: multistep consistency
    sampling (``lcm``) for an ``LCMScheduler`` folder, none otherwise."""
    if config.get("_class_name") != "LCMScheduler":
        return {}
    options = {
        "original_steps": config.get("original_inference_steps", 50),
        "timestep_scaling": config.get("timestep_scaling", 10.0),
    }
    return {"sampler": "lcm", "sampler_options": options}


def schedule_from_diffusers_config(config: dict) -> NoiseSchedule:
    """Rebuild a :class:`NoiseSchedule` from a diffusers scheduler config (``trained_betas``, or
    ``beta_schedule`` with ``beta_start``/``beta_end``)."""
    from difflab.schedules import make_schedule

    prediction_type = config.get("prediction_type", "epsilon")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float32).double()
        return NoiseSchedule(betas, prediction_type=prediction_type, name="custom")
    names = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
    beta_schedule = config.get("beta_schedule", "linear")
    if beta_schedule not in names:
        raise ValueError(
            f"diffusers beta_schedule {beta_schedule!r} is not supported; "
            f"use one of {', '.join(names)} or trained_betas."
        )
    return make_schedule(
        names[beta_schedule],
        config.get("num_train_timesteps", 1000),
        beta_start=config.get("beta_start", 1e-4),
        beta_end=config.get("beta_end", 0.02),
        prediction_type=prediction_type,
    )


def noise_per_image(
    shape: Sequence[int],
    count: int,
    seed: int | Sequence[torch.Generator],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[count, *shape]`` unit Gaussian noise, image i from its own generator (seeded
    ``seed + i``, or the i-th of the given generators), so an image does not depend on how many
    others share its batch."""
    if isinstance(seed, int):
        generators = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    else:
        generators = list(seed)
    if len(generators) != count:
        raise ValueError(f"got {len(generators)} generators for {count} images.")
    return torch.cat([torch.randn((1, *shape), generator=g, dtype=dtype) for g in generators])


def images_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] NCHW tensors to 8-bit PIL images (rounded as diffusers' image processor does)."""
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    array = array.cpu().numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents to images in [-1, 1]: the VAE decodes them after dividing by its scaling factor
    (Rombach et al. 2022, Sec. 4.3.2, latents rescaled to unit variance); with no VAE (a
    pixel-space model) the samples are the images."""
    if vae is None:
        return latents.clamp(-1, 1)
    latents = latents.to(next(vae.parameters()).device)  # the VAE may sit on another device
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


@dataclass
class TextToImagePipeline:
    """Latent text-to-image diffusion: ``pipeline(prompts, steps=..., guidance=...)`` -> PIL images.

    ``unet`` is the latent denoiser, stored in the folder's ``unet`` slot: a UNet2DConditionModel
    or a DiT (PixArtTransformer2DModel); model_index.json records which class it is. With
    ``vae=None`` the model denoises pixels directly (the pixel-space baseline latent diffusion is
    measured against); such folders are difflab's own (:data:`PIXEL_TEXT_TO_IMAGE`), since
    StableDiffusionPipeline needs a VAE.

    ``defaults`` are the sampling settings a model's folder asks for, used when a call names no
    sampler, guidance, steps or guidance interval: ``{"sampler": name, "sampler_options":
    {...}, "guidance": w, "steps": n, "guidance_interval": [t_low, t_high]}`` (e.g. ``lcm`` for
    a latent consistency model; ``ddim`` with trailing spacing at the 4 steps it was distilled
    for, for a progressively distilled student; without ``steps`` a call takes 20, without
    ``guidance_interval`` it guides at every step). They are stored in model_index.json under
    ``_difflab_sampling`` and decide the scheduler plain diffusers gets (LCMScheduler for
    ``lcm``). Without them a call
    uses dpmpp_2m at guidance 5. A denoiser that takes the guidance weight as an input
    (``time_cond_proj_dim``, see :func:`~difflab.models.networks.guidance_embedding`) gets
    ``guidance`` that way instead of through classifier-free guidance.

    ``clip_sample`` (pixel space only; the scheduler's diffusers flag in the folder): clip the
    implied x0 to [-1, 1] at every step unless a call chooses another ``threshold``.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module | None
    prompt_encoder: PromptEncoder
    schedule: NoiseSchedule
    name: str = ""
    defaults: dict = field(default_factory=dict)
    clip_sample: bool = False

    def __post_init__(self) -> None:
        if self.clip_sample and self.vae is not None:
            raise ValueError(
                "clip_sample clips the implied x0 to the image range [-1, 1]; a latent model's "
                "x0 is a latent, so leave clip_sample False when there is a VAE."
            )

    def to(self, device: str | torch.device) -> TextToImagePipeline:
        """Move the denoiser, the VAE and the text encoder to ``device`` (e.g. ``"cuda"``);
        returns the pipeline. The parts may also sit on different devices: prompt states and
        latents follow the module that uses them."""
        for module in (self.unet, self.vae, self.prompt_encoder.text_encoder):
            if module is not None:
                module.to(device)
        return self

    # ---- construction and storage ----

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TextToImagePipeline:
        """Load a pipeline folder written by :meth:`save_pretrained` (or a compatible
        StableDiffusionPipeline folder whose text encoder is a BERT)."""
        import diffusers
        from diffusers import AutoencoderKL

        folder = Path(folder)
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a pipeline folder (no model_index.json); pass a folder written "
                "by save_pretrained or the name of a shipped model (see `difflab models`)."
            )
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        # Shipped folders leave the frozen encoder out: it comes from its own package.
        encoder = folder / "text_encoder"
        tokenizer, text_encoder = load_text_encoder(
            encoder if (encoder / "config.json").is_file() else None, folder / "tokenizer"
        )
        index = json.loads((folder / "model_index.json").read_text())
        denoiser_class = index["unet"][1]
        pixel_space = index.get("vae", [None])[0] is None
        if denoiser_class not in DENOISER_CLASSES:
            raise ValueError(
                f"{folder}: unsupported denoiser class {denoiser_class!r} in model_index.json; "
                f"difflab text-to-image folders hold one of {', '.join(DENOISER_CLASSES)}."
            )
        return cls(
            unet=getattr(diffusers, denoiser_class)
            .from_pretrained(folder / "unet", torch_dtype=torch.float32, use_safetensors=True)
            .eval(),
            vae=None
            if pixel_space
            else AutoencoderKL.from_pretrained(
                folder / "vae", torch_dtype=torch.float32, use_safetensors=True
            ).eval(),
            prompt_encoder=PromptEncoder(tokenizer, text_encoder),
            schedule=schedule_from_diffusers_config(config),
            name=folder.name,
            defaults=index.get(SAMPLING_KEY) or sampling_defaults_from_scheduler(config),
            clip_sample=pixel_space and bool(config.get("clip_sample", False)),
        )

    @classmethod
    def from_diffusers(cls, pipe) -> TextToImagePipeline:
        """Wrap the components of a diffusers StableDiffusionPipeline (so difflab's samplers,
        guidance and editing tools run on real Stable Diffusion checkpoints)."""
        return cls(
            unet=pipe.unet,
            vae=pipe.vae,
            prompt_encoder=PromptEncoder(pipe.tokenizer, pipe.text_encoder),
            schedule=schedule_from_diffusers_config(dict(pipe.scheduler.config)),
            defaults=sampling_defaults_from_scheduler(
                {**pipe.scheduler.config, "_class_name": type(pipe.scheduler).__name__}
            ),
        )

    def to_diffusers(self):
        """A diffusers StableDiffusionPipeline with these components and a DDIM scheduler on
        the same noise schedule (leading spacing with ``steps_offset = 1``, which that pipeline
        imposes; pass ``spacing=timesteps(schedule, n, "leading", offset=1)`` to difflab's
        ``ddim`` to visit exactly the same timesteps).

        With a DiT denoiser the folder this writes still loads in diffusers (model_index.json
        names its class), but StableDiffusionPipeline's loop calls the U-Net signature: sample
        such a model with difflab."""
        from diffusers import StableDiffusionPipeline

        if self.vae is None:
            raise ValueError(
                "a pixel-space text-to-image model has no VAE, and diffusers' "
                "StableDiffusionPipeline needs one: sample it with difflab (save_pretrained "
                "writes difflab's own folder layout for it)."
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.prompt_encoder.text_encoder,
            tokenizer=self.prompt_encoder.tokenizer,
            unet=self.unet,
            scheduler=self.diffusers_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def diffusers_scheduler(self):
        """diffusers' DDIMScheduler on this pipeline's noise schedule, as StableDiffusionPipeline
        wants it (leading spacing, ``steps_offset = 1``) - or, for a distilled model (see
        :attr:`defaults`), the LCMScheduler of its solver grid and boundary scalings (default
        sampler ``lcm``) or a trailing DDIMScheduler (default ``ddim`` with trailing spacing).
        StableDiffusionPipeline gives a denoiser with a guidance input ``guidance_scale - 1``
        itself, and no classifier-free guidance, as difflab does."""
        from diffusers import DDIMScheduler, LCMScheduler

        schedule = {
            "num_train_timesteps": self.schedule.num_train_timesteps,
            "trained_betas": self.schedule.betas.float().tolist(),
            "prediction_type": self.schedule.prediction_type,
            "clip_sample": self.clip_sample,
            "set_alpha_to_one": True,
            "steps_offset": 1,  # StableDiffusionPipeline forces 1 (see latents' docstring)
        }
        sampler, options = self.defaults.get("sampler"), self.defaults.get("sampler_options", {})
        if sampler == "lcm":
            return LCMScheduler(
                **schedule,
                original_inference_steps=options.get("original_steps", 50),
                timestep_scaling=options.get("timestep_scaling", 10.0),
            )
        trailing = sampler == "ddim" and options.get("spacing") == "trailing"
        return DDIMScheduler(**schedule, timestep_spacing="trailing" if trailing else "leading")

    def _save_pixel_folder(self, folder: Path) -> None:
        """The folder of a pixel-space model: the same components as a StableDiffusionPipeline
        folder minus the VAE, under :data:`PIXEL_TEXT_TO_IMAGE`."""
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler = self.diffusers_scheduler()
        scheduler.save_pretrained(folder / "scheduler")
        self.prompt_encoder.tokenizer.save_pretrained(folder / "tokenizer")
        self.prompt_encoder.text_encoder.save_pretrained(
            folder / "text_encoder", safe_serialization=True
        )
        index = {
            "_class_name": PIXEL_TEXT_TO_IMAGE,
            "unet": ["diffusers", type(self.unet).__name__],
            "vae": [None, None],
            "text_encoder": ["transformers", type(self.prompt_encoder.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.prompt_encoder.tokenizer).__name__],
            "scheduler": ["diffusers", type(scheduler).__name__],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    def save_pretrained(self, folder: str | Path, include_text_encoder: bool = True) -> None:
        """Write the diffusers folder layout (safetensors weights, JSON configs).

        With ``include_text_encoder=False`` (shipped checkpoints) the frozen encoder's 45 MB are
        left out and model_index.json marks it ``[null, null]``: difflab loads it from its
        package, and plain diffusers takes it as ``from_pretrained(folder, text_encoder=...)``.
        """
        folder = Path(folder)
        if self.vae is None:
            self._save_pixel_folder(folder)
        else:
            self.to_diffusers().save_pretrained(folder, safe_serialization=True)
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        if not include_text_encoder:
            import shutil

            shutil.rmtree(folder / "text_encoder")
            index["text_encoder"] = [None, None]
        if self.defaults:
            index[SAMPLING_KEY] = self.defaults
        index_path.write_text(json.dumps(index, indent=2) + "\n")

    # ---- sampling ----

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    @property
    def guidance_embedded(self) -> bool:
        """Whether the denoiser takes the guidance weight as an input (a guidance-distilled
        student or an LCM) rather than running classifier-free guidance."""
        return guidance_input_dim(self.unet) is not None

    def sampling_settings(
        self, sampler: str | None = None, guidance: float | None = None, **sampler_options
    ) -> tuple[str, float, dict]:
        """The (sampler, guidance, sampler options) a call runs: what it names, else the folder's
        :attr:`defaults`, else dpmpp_2m at guidance 5. The default sampler's stored options apply
        whenever that sampler runs; options given in the call win."""
        default = self.defaults.get("sampler", DEFAULT_SAMPLER)
        sampler = sampler or default
        if sampler == default:
            sampler_options = {**self.defaults.get("sampler_options", {}), **sampler_options}
        if guidance is None:
            guidance = self.defaults.get("guidance", DEFAULT_GUIDANCE)
        return sampler, float(guidance), sampler_options

    def guidance_interval_setting(
        self, interval: Sequence[int] | str | None = None
    ) -> list[int] | str:
        """The guidance interval a call runs (see :meth:`latents`): what it names, else the
        folder's :attr:`defaults` (``"guidance_interval"``), else ``"all"`` (every step)."""
        if interval is None:
            interval = self.defaults.get("guidance_interval", EVERY_STEP)
        check_guidance_interval(interval)
        return interval if isinstance(interval, str) else [int(v) for v in interval]

    def sampling_steps(self, steps: int | None = None) -> int:
        """The number of steps a call runs: what it names, else the folder's ``defaults``, else
        20. Zero or fewer steps is an error, not "the default"."""
        if steps is None:
            return int(self.defaults.get("steps", DEFAULT_STEPS))
        return checked_steps(steps)

    def denoiser(self) -> Callable[..., torch.Tensor]:
        """The conditional model ``model(x_t, t, context, guidance=None)`` the samplers and
        guidance wrap (``guidance``: the weight, for a denoiser that takes it as an input)."""

        def model(
            x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, guidance=None
        ) -> torch.Tensor:
            condition = guidance_condition(self.unet, guidance, x.shape[0])
            return call_denoiser(self.unet, x, t, encoder_hidden_states=context, **condition)

        return model

    def conditioned_model(
        self, prompts: Sequence[str], num_images_per_prompt: int, guidance: float,
        guidance_interval: Sequence[int] | str | None = None,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:  # fmt: skip
        """``model(x_t, t)`` for the samplers: conditioned on the prompts (each repeated
        ``num_images_per_prompt`` times) and guided with weight ``guidance`` - by
        classifier-free guidance (only at the timesteps of ``guidance_interval`` if given, see
        :func:`~difflab.guidance.classifier_free_guidance`), or as the input of a denoiser that
        takes it."""
        check_guidance_interval(guidance_interval)
        if guidance_interval not in (None, EVERY_STEP) and self.guidance_embedded:
            raise ValueError(
                f"{self.name or 'this model'} takes the guidance weight as an input (a "
                "guidance-distilled student), so there is no classifier-free guidance to limit "
                "to an interval; leave guidance_interval out."
            )
        guided = guidance != 1.0 and not self.guidance_embedded
        # the empty prompt rides in the same text-encoder call (one pass instead of two)
        states = self.prompt_encoder(list(prompts) + [""] * guided)
        states = states.to(next(self.unet.parameters()).device)  # the encoder may sit elsewhere
        context = states[: len(prompts)].repeat_interleave(num_images_per_prompt, 0)
        model = self.denoiser()
        if self.guidance_embedded:

            def embedded(x, t):
                return model(x, t, context, guidance)

            return embedded
        if guided:
            return classifier_free_guidance(
                model, context, states[-1:].expand_as(context), guidance,
                interval=guidance_interval,
            )  # fmt: skip

        return conditional_model(model, context)

    def initial_noise(self, count: int, seed: int | Sequence[torch.Generator]) -> torch.Tensor:
        """Starting latents, one generator per image (seed, seed + 1, ...), so an image does not
        depend on how many others share its batch."""
        dtype = next(self.unet.parameters()).dtype
        return noise_per_image(self.latent_shape, count, seed, dtype)

    def latents(
        self,
        prompts: str | Sequence[str],
        num_images_per_prompt: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int | Sequence[torch.Generator] = 0,
        callback=None,
        progress: bool = False,
        guide: Guide | None = None,
        threshold: str | None = None,
        threshold_percentile: float = 0.995,
        guidance_interval: Sequence[int] | str | None = None,
        **sampler_options,
    ) -> torch.Tensor:
        """Sample latents [N, C, h, w] (N = len(prompts) * num_images_per_prompt, grouped by
        prompt). ``guidance`` is the classifier-free guidance weight (1 = off); ``sampler``,
        ``guidance`` and the sampler's options default to :meth:`sampling_settings`, ``steps``
        to :meth:`sampling_steps`. ``guidance_interval`` = (t_low, t_high) limits
        classifier-free guidance to those timesteps (Kynkaanniemi et al. 2024; see
        :func:`~difflab.guidance.classifier_free_guidance`), ``"all"`` guides at every step,
        None takes :meth:`guidance_interval_setting`. ``guide`` wraps the guided denoiser
        (:data:`difflab.guidance.Guide`; classifier / CLIP guidance and thresholding act on pixels, so give one to a pixel-space model); then a pixel
        model's implied x0 is thresholded: ``threshold`` None = the folder's default
        (:attr:`clip_sample`), ``"none"``, ``"static"`` or ``"dynamic"``."""
        if self.vae is not None and resolved_threshold(threshold, False):
            raise ValueError(
                f"thresholding acts on pixels and {self.name or 'this model'} is a latent model; "
                "threshold a pixel-space model (e.g. shapes-uncond, digits or a cascade)"
            )
        guide = chain_guides(
            guide, sampling_threshold(threshold, self.clip_sample, threshold_percentile)
        )
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("give at least one prompt.")
        if num_images_per_prompt < 1:
            raise ValueError("num_images_per_prompt must be at least 1.")
        sampler, guidance, sampler_options = self.sampling_settings(
            sampler, guidance, **sampler_options
        )
        steps = self.sampling_steps(steps)
        guidance_interval = self.guidance_interval_setting(guidance_interval)
        count = len(prompts) * num_images_per_prompt
        device = next(self.unet.parameters()).device
        guided = self.conditioned_model(prompts, num_images_per_prompt, guidance, guidance_interval)
        if guide is not None:
            guided = guide(guided, self.schedule)
        x_T = self.initial_noise(count, seed).to(device)
        noise_seed = seed if isinstance(seed, int) else 0
        generator = torch.Generator().manual_seed(noise_seed + 10_000_019)
        # inference mode is ~5% faster than no_grad on CPU, but a guide differentiates the
        # denoiser, which inference mode forbids; the result is cloned out of inference mode so
        # callers may use it in autograd
        with torch.no_grad() if guide is not None else torch.inference_mode():
            latents = samplers.sample(
                sampler, guided, self.schedule, x_T, steps, generator,
                callback=callback, progress=progress, **sampler_options,
            )  # fmt: skip
        return latents.clone()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1] (:func:`decode_latents`)."""
        return decode_latents(self.vae, latents)

    def __call__(
        self,
        prompts: str | Sequence[str],
        num_images_per_prompt: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
        **options,
    ) -> list[Image.Image]:
        """Generate PIL images for ``prompts``."""
        latents = self.latents(
            prompts, num_images_per_prompt, steps, guidance, sampler, seed, **options
        )
        return images_to_pil(self.decode(latents))


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile equally sized PIL images into one grid image."""
    if not images:
        raise ValueError("no images to tile.")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    w, h = images[0].size
    grid = Image.new(images[0].mode, (columns * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid


def resolved_guidance_interval(pipeline, interval: Sequence[int] | str | None = None):
    """The guidance interval ``pipeline`` runs for ``interval`` - for a text-to-image pipeline
    :meth:`TextToImagePipeline.guidance_interval_setting` (None becomes the folder's default),
    so that reports and PNGs record what ran; other pipelines' ``interval`` as given."""
    if isinstance(pipeline, TextToImagePipeline):
        return pipeline.guidance_interval_setting(interval)
    return interval


def guidance_interval_keywords(pipeline, interval: Sequence[int] | str | None) -> dict:
    """The keywords that hand ``interval`` to ``pipeline.latents`` (none when it is None); a
    clear error for the pipelines that have no guidance interval (cascades, unCLIP)."""
    if interval is None:
        return {}
    if not isinstance(pipeline, TextToImagePipeline):  # e.g. "all" replayed on a cascade
        raise ValueError(
            f"a guidance interval applies to text-to-image models (latent or pixel), not to "
            f"{type(pipeline).__name__}; leave --guidance-interval out."
        )
    return {"guidance_interval": interval if isinstance(interval, str) else tuple(interval)}
