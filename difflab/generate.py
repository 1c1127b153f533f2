"""Generate images to PNG files that carry their own recipe.

Every PNG holds its prompt, model (and LoRA adapter), sampler, steps, guidance and seed in PNG
text chunks, so :func:`settings_from_png` + :func:`generate_images` reproduce it bit for bit.
Each image is sampled alone from its own seed, so it does not depend on the batch it was
generated in.

Pixel-space models can also be steered by classifier guidance toward a noise-aware classifier's
labels or by CLIP guidance toward the prompt, and have their x0 thresholded at every step (see
:mod:`difflab.guidance`; a folder whose scheduler sets ``clip_sample`` clips it by default, and
the PNG records the thresholding that ran); a class-conditional pixel model takes a class name
as its prompt (the empty prompt is its null class, i.e. the unconditional model), an
unconditional one none.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError
from tqdm.auto import tqdm

from difflab import __version__
from difflab.guidance import EVERY_STEP
from difflab.pipelines.text_to_image import (
    DEFAULT_STEPS,
    checked_steps,
    guidance_interval_keywords,
    image_grid,
    images_to_pil,
    resolved_guidance_interval,
)
from difflab.storage import unused_path

METADATA_KEY = "difflab"


@dataclass
class GenerationSettings:
    """Everything that determines one generated image. ``sampler`` or ``guidance`` None means
    the model's default (see :func:`complete_settings`)."""

    prompt: str
    model: str
    sampler: str | None = "dpmpp_2m"
    steps: int | None = 20  # None = the model's default (4 for a distilled student, else 20)
    guidance: float | None = 5.0
    seed: int = 0
    classifier_guidance: str = ""  # classifier guidance toward e.g. "colour=red,shape=circle"
    clip_guidance: bool = False  # CLIP guidance toward the prompt
    guidance_model: str = ""  # the classifier or CLIP (name or folder); "" = the default one
    scale: float = 0.0  # the classifier / CLIP guidance scale s
    # thresholding of the implied x0: "" (none), "static" or "dynamic"; None = the model's
    # default (static for a pixel folder with clip_sample, else none)
    threshold: str | None = None
    threshold_percentile: float = 0.995  # dynamic thresholding's percentile
    lora: str = ""  # an LCM-LoRA attached to the model (name or folder); "" = none
    # classifier-free guidance only at timesteps [t_low, t_high] (Kynkaanniemi et al. 2024),
    # "all" at every step; None = the model's default
    guidance_interval: list[int] | str | None = None


def complete_settings(pipeline, settings: list[GenerationSettings]) -> list[GenerationSettings]:
    """Fill in the sampler, guidance, steps, guidance interval and thresholding a setting leaves
    open (None) with the pipeline's defaults - a distilled model's folder names its own sampler
    and steps (``lcm`` at 4 for a latent consistency model), ``shapes-t2i`` its guidance
    interval, a pixel folder with ``clip_sample`` static thresholding - so that every PNG
    records what actually ran."""
    from dataclasses import replace

    from difflab.guidance import resolved_threshold

    clip_sample = bool(getattr(pipeline, "clip_sample", False))
    completed = []
    for s in settings:
        sampler, guidance, steps = model_sampling(pipeline, s.sampler, s.guidance, s.steps)
        threshold = resolved_threshold(s.threshold, clip_sample)
        interval = resolved_guidance_interval(pipeline, s.guidance_interval)
        completed.append(
            replace(
                s,
                sampler=sampler,
                guidance=guidance,
                steps=steps,
                threshold=threshold,
                guidance_interval=interval,
            )  # fmt: skip
        )
    return completed


def model_sampling(
    pipeline, sampler: str | None, guidance: float | None, steps: int | None
) -> tuple[str, float, int]:
    """The sampler, guidance weight and steps a call runs: those given, else the pipeline's
    defaults (its folder's, e.g. ``lcm`` at 4 steps for a consistency model), else dpmpp_2m at
    w = 5 and 20 steps."""
    sampler, guidance, _ = pipeline.sampling_settings(sampler, guidance)
    if hasattr(pipeline, "sampling_steps"):  # a folder that may name its steps
        return sampler, guidance, pipeline.sampling_steps(steps)
    return sampler, guidance, DEFAULT_STEPS if steps is None else checked_steps(steps)


def save_png(image: Image.Image, path: Path, settings: GenerationSettings | dict) -> None:
    """Write ``image`` with ``settings`` (JSON, plus one chunk per field) in its text chunks (a
    dict of settings for outputs :func:`settings_from_png` cannot replay, e.g. variations)."""
    info = PngImagePlugin.PngInfo()
    settings = settings if isinstance(settings, dict) else asdict(settings)
    record = {**settings, "difflab_version": __version__}
    info.add_text(METADATA_KEY, json.dumps(record))
    for key, value in record.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)


def settings_from_png(path: str | Path) -> GenerationSettings:
    """Read the generation settings stored in a PNG written by :func:`save_png`."""
    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}) or {}
    except UnidentifiedImageError:
        raise ValueError(
            f"{path} is not an image; pass a PNG written by `difflab generate`."
        ) from None
    if METADATA_KEY not in text:
        raise ValueError(
            f"{path} carries no difflab generation settings (no '{METADATA_KEY}' PNG text "
            "chunk); only PNGs written by `difflab generate` can be reproduced."
        )
    record = json.loads(text[METADATA_KEY])
    # PNGs written before guidance intervals existed were guided at every step
    record.setdefault("guidance_interval", EVERY_STEP)
    fields = GenerationSettings.__dataclass_fields__
    return GenerationSettings(**{k: v for k, v in record.items() if k in fields})


@functools.lru_cache(maxsize=4)
def _classifier(name: str):
    from difflab.models.feature_nets import load_feature_network

    return load_feature_network(name, resize=True)


@functools.lru_cache(maxsize=2)
def _clip(name: str):
    from difflab.models.clip import load_clip_model

    return load_clip_model(name, resize=True)


def default_classifier(pipeline) -> str:
    """The classifier a pipeline is guided with by default: ``digits-classifier`` for grey
    images, ``shapes-classifier`` otherwise."""
    unet = getattr(pipeline, "unet", None)
    grey = unet is not None and getattr(unet.config, "in_channels", 3) == 1
    return "digits-classifier" if grey else "shapes-classifier"


def settings_guide(pipeline, s: GenerationSettings):
    """The :data:`~difflab.guidance.Guide` a setting asks for (None for none): classifier or
    CLIP guidance with scale ``s.scale`` (the pipeline thresholds after it, see
    :func:`sample_settings`). Both act on pixels, as thresholding does, so a latent model is
    refused."""
    from difflab.guidance import (
        chain_guides,
        classifier_guide,
        clip_guide,
        parse_targets,
        resolved_threshold,
    )

    asked_threshold = resolved_threshold(s.threshold, clip_sample=False)  # named in the call
    wanted = [w for w, on in (("classifier guidance", s.classifier_guidance),
                              ("CLIP guidance", s.clip_guidance), ("thresholding", asked_threshold))
              if on]  # fmt: skip
    if not wanted:
        return None
    if getattr(pipeline, "vae", None) is not None:
        raise ValueError(
            f"{' and '.join(wanted)} act on pixels, and {s.model} is a latent model; use a "
            "pixel-space model (e.g. shapes-uncond, digits or a cascade)"
        )
    if s.classifier_guidance and s.clip_guidance:
        raise ValueError("choose classifier guidance or CLIP guidance, not both")
    guides = []
    if s.classifier_guidance:
        classifier = _classifier(s.guidance_model or default_classifier(pipeline))
        targets = parse_targets(s.classifier_guidance, classifier.config.heads)
        guides.append(classifier_guide(classifier, targets, s.scale))
    if s.clip_guidance:
        if not s.prompt:
            raise ValueError("CLIP guidance steers toward the prompt: give one")
        guides.append(clip_guide(_clip(s.guidance_model or "shapes-clip"), [s.prompt], s.scale))
    return chain_guides(*guides)


def sample_settings(pipeline, s: GenerationSettings):
    """One image ``[1, C, H, W]`` in [-1, 1] for one settings entry."""
    guide = settings_guide(pipeline, s)
    thresholding = {}  # pipelines that threshold x0 declare a clip_sample default (unCLIP: none)
    if hasattr(pipeline, "clip_sample"):
        thresholding = {"threshold": s.threshold, "threshold_percentile": s.threshold_percentile}
    interval = guidance_interval_keywords(pipeline, s.guidance_interval)
    if hasattr(pipeline, "latents"):  # text-to-image, cascade, unCLIP
        latents = pipeline.latents(
            [s.prompt], 1, steps=s.steps, guidance=s.guidance, sampler=s.sampler, seed=s.seed,
            guide=guide, **thresholding, **interval,
        )  # fmt: skip
        return pipeline.decode(latents)
    if not hasattr(pipeline, "class_names"):
        raise ValueError(
            f"{s.model} does not generate on its own (a super-resolution stage needs a "
            "low-resolution image: use its cascade folder)"
        )
    if pipeline.class_names:  # a class name, or "" for the null class
        labels = [None if s.clip_guidance or not s.prompt else s.prompt]
    elif s.prompt and not s.clip_guidance:
        raise ValueError(
            f"{s.model} is unconditional and takes no prompt: steer it with --clip-guidance "
            "(toward the prompt) or --classifier-guidance"
        )
    else:
        labels = 1
    return pipeline.sample(
        labels, s.steps, s.guidance, sampler=s.sampler, seed=s.seed, guide=guide, **thresholding
    )


def generate_images(
    pipeline, settings: list[GenerationSettings], progress: bool = True
) -> list[Image.Image]:
    """Generate one image per settings entry, each sampled alone from its own seed."""
    images = []
    for s in tqdm(settings, desc="generating", disable=not progress or len(settings) < 2):
        images.extend(images_to_pil(sample_settings(pipeline, s)))
    return images


def next_output_index(out: Path) -> int:
    """The number the next generated PNG in ``out`` takes: one past the highest ``NNN-`` prefix
    of the PNGs already there (0 for a new folder), so a second run adds to the folder."""
    prefixes = (path.name.split("-", 1)[0] for path in out.glob("*-*.png"))
    return max((int(prefix) for prefix in prefixes if prefix.isdigit()), default=-1) + 1


def write_outputs(
    images: list[Image.Image], settings: list[GenerationSettings], out: Path
) -> list[Path]:
    """Save each image as ``out/NNN-<prompt>-seed<K>.png`` (with metadata) and, for more than
    one, a grid (``grid.png``). Files already in ``out`` are kept: numbering continues from the
    highest ``NNN`` there and the grid takes the first free name (``grid-1.png``, ...), so a
    rerun, or ``--from-png`` into the folder that holds its source, adds files and replaces
    none. Returns the image paths, then the grid's."""
    out.mkdir(parents=True, exist_ok=True)
    first = next_output_index(out)
    paths = []
    for i, (image, s) in enumerate(zip(images, settings, strict=True)):
        name = s.prompt or s.classifier_guidance or "sample"
        slug = "".join(c if c.isalnum() else "-" for c in name.lower())[:48].strip("-")
        path = out / f"{first + i:03d}-{slug}-seed{s.seed}.png"  # free: its NNN is past all
        save_png(image, path, s)
        paths.append(path)
    if len(images) > 1:
        grid = unused_path(out / "grid.png")
        image_grid(images).save(grid)
        paths.append(grid)
    return paths


def generate_suite_folder(
    pipeline,
    out_dir: str | Path,
    suite: list[dict],
    images_per_prompt: int = 4,
    steps: int = 20,
    sampler: str = "dpmpp_2m",
    guidance: float = 5.0,
    seed: int = 0,
    model_name: str = "",
    progress: bool = True,
    guidance_interval: list[int] | str | None = None,
) -> int:
    """Generate images for every prompt of a ShapesEval suite in its folder layout
    (``out_dir/00012/3.png``: prompt line 12, image 3), ready for
    :func:`difflab.eval.shapes.score_folder`. Image k of prompt i uses seed
    ``seed + 1000 * i + k``, recorded in its PNG like every generated image. Returns the count."""
    out_dir = Path(out_dir)
    guidance_interval = resolved_guidance_interval(pipeline, guidance_interval)
    interval = guidance_interval_keywords(pipeline, guidance_interval)
    written = 0
    for index, entry in enumerate(tqdm(suite, desc="generating suite", disable=not progress)):
        first = seed + 1000 * index
        latents = pipeline.latents(
            [entry["prompt"]], images_per_prompt, steps=steps, guidance=guidance,
            sampler=sampler, seed=first, **interval,
        )  # fmt: skip
        folder = out_dir / f"{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images_to_pil(pipeline.decode(latents))):
            settings = GenerationSettings(
                entry["prompt"], model_name, sampler, steps, guidance, first + k,
                guidance_interval=guidance_interval,
            )  # fmt: skip
            save_png(image, folder / f"{k}.png", settings)
            written += 1
    return written


def takes_no_prompt(model: str) -> bool:
    """Whether ``model`` (a name or folder) is a pixel-space class-conditional or unconditional
    model, which generates without a prompt; False if it cannot be found."""
    from difflab.pipelines.pixel import CLASS_CONDITIONAL
    from difflab.zoo import resolve_model

    try:
        index = json.loads((resolve_model(model) / "model_index.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return index.get("_class_name") in (CLASS_CONDITIONAL, "DDPMPipeline")


def read_image(path: str | Path, size: int, channels: int = 3):
    """An image file as a tensor ``[1, C, size, size]`` in [-1, 1] (converted to RGB or grey and
    resized, bicubic, if needed)."""
    import numpy as np
    import torch

    with Image.open(path) as image:
        image = image.convert("RGB" if channels == 3 else "L")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32).reshape(size, size, channels)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def _unclip(pipeline, model: str):
    if not hasattr(pipeline, "variations"):
        raise ValueError(f"{model} is not an unCLIP model (variations and interpolations decode "
                         "CLIP image embeddings; see `difflab train shapes-unclip-decoder`)")  # fmt: skip
    return pipeline


def write_variations(
    pipeline, model: str, paths: list[Path], num_images: int, out: Path, **options
) -> list[Path]:
    """unCLIP variations of each image file: ``out/<name>-var<k>.png`` (settings in their text
    chunks) and ``grid.png`` (one row per input: the input, then its variations). A name already
    taken in ``out`` gets the first free ``-1``, ``-2``, ... suffix instead, so the inputs (which
    may lie in ``out``) and earlier outputs are kept. Returns the variations' paths, then the
    grid's."""
    pipeline = _unclip(pipeline, model)
    size, channels = pipeline.clip.config.image_size, pipeline.clip.config.in_channels
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for path in paths:
        source = read_image(path, size, channels)
        made = images_to_pil(pipeline.variations(source, num_images, **options))
        rows.extend(images_to_pil(source.clamp(-1, 1)) + made)
        for k, image in enumerate(made):
            target = unused_path(out / f"{Path(path).stem}-var{k}.png")
            record = {"variation_of": str(path), "model": model, "index": k, **options}
            save_png(image, target, record)
            written.append(target)
    grid = unused_path(out / "grid.png")
    image_grid(rows, columns=num_images + 1).save(grid)
    return [*written, grid]


def write_interpolation(
    pipeline, model: str, a: Path, b: Path, points: int, out: Path, **options
) -> list[Path]:
    """unCLIP interpolation from image ``a`` to image ``b``: ``out/interp-<k>.png`` and
    ``grid.png`` (``a``, the ``points`` decodings, ``b``), each under the first free name
    (``interp-<k>-1.png``, ...) where ``out`` already holds one. Returns the decodings' paths,
    then the grid's."""
    pipeline = _unclip(pipeline, model)
    size, channels = pipeline.clip.config.image_size, pipeline.clip.config.in_channels
    image_a, image_b = (read_image(p, size, channels) for p in (a, b))
    made = images_to_pil(pipeline.interpolate(image_a, image_b, points, **options))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, image in enumerate(made):
        target = unused_path(out / f"interp-{k}.png")
        record = {"interpolation": [str(a), str(b)], "model": model, "theta": k / (points - 1),
                  **options}  # fmt: skip
        save_png(image, target, record)
        written.append(target)
    ends = [images_to_pil(x.clamp(-1, 1))[0] for x in (image_a, image_b)]
    grid = unused_path(out / "grid.png")
    image_grid([ends[0], *made, ends[1]], columns=points + 2).save(grid)
    return [*written, grid]
