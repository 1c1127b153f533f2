"""Measuring with a CLIP model (:mod:`difflab.models.clip`): CLIP-T and CLIPScore, CLIP-I,
zero-shot attribute classification and retrieval on the shapes world, and the whole
``difflab eval clip`` run (:func:`evaluate_clip_score`).

- **CLIP-T** (:func:`clip_t_score`): the mean cosine between each image and its own prompt, as
  text-to-image papers report prompt fidelity; also ``clip_t_100`` = ``100 * mean(max(cos, 0))``
  (the "CLIP score" of torchmetrics and of most text-to-image papers) and Hessel et al.'s
  **CLIPScore** ``= w * max(cos, 0)`` with ``w = 2.5`` (Hessel et al. 2021, Eq. 1), averaged.
- **CLIP-I** (:func:`clip_i_score`): the mean cosine between two image sets, matched pairs
  (image i with image i) or all pairs (e.g. DreamBooth's subject fidelity, Ruiz et al. 2023).
- **Zero-shot classification** (:func:`zero_shot_attributes`, Radford et al. 2021, Sec. 3.1):
  single-object validation scenes classified by the prompt of highest similarity, with prompts
  written in the training captions' grammar: shape from the 7 prompts "a circle", ...; colour
  (and shape) from the 70 prompts "a red circle", ...; size (and colour, shape) from the 140
  prompts "a small red circle", ....
- **Retrieval** (:func:`retrieval_accuracy`): in groups of validation images and their
  captions, how often an image's most similar caption is its own, and the other way round.

Numbers depend on the CLIP model: compare only scores measured with the same one (these are not
OpenAI CLIP scores).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch

from difflab.data.shapes import (
    SHAPES,
    SIZES,
    SceneConfig,
    ShapesDataset,
    render_batch,
    sample_scene,
    scene_rng,
)
from difflab.data.shapes_captions import Phrase, phrase_text
from difflab.data.shapes_geometry import COLOURS
from difflab.storage import require_empty_folder

HESSEL_W = 2.5  # CLIPScore's rescaling weight (Hessel et al. 2021, Sec. 3)
DEFAULT_CLIP = "shapes-clip"


def _batched(fn, items, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(items[i : i + batch_size]) for i in range(0, len(items), batch_size)])


@torch.no_grad()
def image_embeddings(model, images: torch.Tensor, batch_size: int = 256, log_snr=None):
    """Unit image embeddings ``[N, D]`` in batches (eval mode)."""
    model.eval()
    return _batched(lambda x: model.encode_image(x, log_snr), images, batch_size)


@torch.no_grad()
def text_embeddings(model, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Unit text embeddings ``[N, D]`` in batches (eval mode)."""
    model.eval()
    return _batched(lambda p: model.encode_text(list(p), warn=False), list(prompts), batch_size)


def clip_t_score(model, images: torch.Tensor, prompts: list[str], batch_size: int = 256) -> dict:
    """CLIP-T of images and their prompts (image i with prompt i): ``clip_t`` (mean cosine),
    ``clip_t_100`` (``100 * mean(max(cos, 0))``), ``clipscore`` (Hessel et al. 2021:
    ``mean(2.5 * max(cos, 0))``) and ``cosines``, one per image."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts; pair them one to one")
    if len(prompts) == 0:
        raise ValueError("no images to score")
    cosines = (
        image_embeddings(model, images, batch_size) * text_embeddings(model, prompts, batch_size)
    ).sum(1).double()  # fmt: skip
    positive = cosines.clamp(min=0)
    return {
        "clip_t": float(cosines.mean()),
        "clip_t_100": float(100 * positive.mean()),
        "clipscore": float(HESSEL_W * positive.mean()),
        "cosines": cosines.tolist(),
    }


def clip_i_score(
    model, images_a: torch.Tensor, images_b: torch.Tensor, matched: bool = True,
    batch_size: int = 256,
) -> float:  # fmt: skip
    """CLIP-I: mean cosine between image embeddings of two sets, over matched pairs ``(a_i, b_i)``
    (``matched``) or over all pairs ``(a_i, b_j)``."""
    a = image_embeddings(model, images_a, batch_size).double()
    b = image_embeddings(model, images_b, batch_size).double()
    if matched:
        if len(a) != len(b):
            raise ValueError(f"matched CLIP-I needs equal sets, got {len(a)} and {len(b)} images")
        return float((a * b).sum(1).mean())
    return float((a @ b.T).mean())


# --------------------------------------------------------------------------- zero-shot


def single_object_scenes(count: int, seed: int = 0, split: str = "validation") -> list:
    """Scenes ``0..count-1`` of ``split`` with exactly one object (held-out pairs included)."""
    config = SceneConfig(min_objects=1, max_objects=1)
    return [sample_scene(scene_rng(seed, split, i), config) for i in range(count)]


def zero_shot_prompt_sets() -> dict[str, tuple[list[str], list[dict]]]:
    """The prompt sets: ``name -> (prompts, the attributes each prompt names)``."""
    sets: dict[str, tuple[list[str], list[dict]]] = {}
    for name, attributes in (
        ("shape", ("shape",)),
        ("colour shape", ("colour", "shape")),
        ("size colour shape", ("size", "colour", "shape")),
    ):
        values = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES)}
        labels = [
            dict(zip(attributes, combo, strict=True))
            for combo in itertools.product(*(values[a] for a in attributes))
        ]
        prompts = [phrase_text(Phrase(label["shape"], 1, label.get("colour"), label.get("size")))
                   for label in labels]  # fmt: skip
        sets[name] = (prompts, labels)
    return sets


def zero_shot_prompt_embeddings(model) -> dict[str, torch.Tensor]:
    """Text embeddings of every prompt set of :func:`zero_shot_prompt_sets` (217 prompts): pass
    them to :func:`zero_shot_attributes` to measure several noise levels with one encoding."""
    return {name: text_embeddings(model, prompts)
            for name, (prompts, _) in zero_shot_prompt_sets().items()}  # fmt: skip


@torch.no_grad()
def zero_shot_attributes(
    model, count: int = 1000, size: int | None = None, log_snr: float | None = None,
    generator: torch.Generator | None = None, batch_size: int = 256,
    prompt_embeddings: dict[str, torch.Tensor] | None = None,
) -> dict:  # fmt: skip
    """Zero-shot accuracy on ``count`` single-object validation scenes (data seed 0), rendered at
    ``size`` (default the model's input size), clean or noised to ``log_snr`` (noise from
    ``generator``, default seeded 0). Returns ``shape`` (7 prompts), ``colour`` (70), ``size``
    (140) and per prompt set the accuracy of every attribute it names and of all together.
    ``prompt_embeddings``: :func:`zero_shot_prompt_embeddings` of ``model``, if already made."""
    from difflab.models.clip import noise_images

    prompt_embeddings = prompt_embeddings or zero_shot_prompt_embeddings(model)

    scenes = single_object_scenes(count)
    images = render_batch(scenes, size or model.config.image_size)
    if log_snr is not None:
        generator = generator or torch.Generator().manual_seed(0)
        images, _ = noise_images(images, generator, 1.0, log_snr, log_snr)
    embedded = image_embeddings(model, images, batch_size, log_snr)
    truth = [{"shape": s.objects[0].shape, "colour": s.objects[0].colour,
              "size": s.objects[0].size} for s in scenes]  # fmt: skip
    per_set = {}
    for name, (_, labels) in zero_shot_prompt_sets().items():
        chosen = (embedded @ prompt_embeddings[name].T).argmax(1).tolist()
        right = {a: [labels[c][a] == t[a] for c, t in zip(chosen, truth, strict=True)]
                 for a in labels[0]}  # fmt: skip
        right["all"] = [all(r) for r in zip(*right.values(), strict=True)]
        per_set[name] = {a: sum(r) / count for a, r in right.items()}
    return {
        "shape": per_set["shape"]["shape"],
        "colour": per_set["colour shape"]["colour"],
        "size": per_set["size colour shape"]["size"],
        "by_prompt_set": per_set,
        "images": count,
        "log_snr": log_snr,
    }


@torch.no_grad()
def retrieval_accuracy(
    model, images: torch.Tensor, captions: list[str], group: int = 64, batch_size: int = 256
) -> dict:
    """Top-1 retrieval within consecutive groups of ``group`` images and their captions: an image
    scores when its most similar caption of the group is its own (or identical text), a caption
    when its most similar image is one it was written for. Chance is about ``1 / group``."""
    if len(images) != len(captions) or len(captions) < group:
        raise ValueError(f"need at least {group} images, each with its caption; got "
                         f"{len(images)} images and {len(captions)} captions")  # fmt: skip
    count = len(captions) // group * group
    a = image_embeddings(model, images[:count], batch_size)
    b = text_embeddings(model, captions[:count], batch_size)
    to_text = to_image = 0
    for start in range(0, count, group):
        similarity = a[start : start + group] @ b[start : start + group].T
        texts = captions[start : start + group]
        for i, (j, k) in enumerate(zip(similarity.argmax(1).tolist(),
                                       similarity.argmax(0).tolist(), strict=True)):  # fmt: skip
            to_text += texts[j] == texts[i]
            to_image += texts[k] == texts[i]
    return {"image_to_text": to_text / count, "text_to_image": to_image / count, "group": group,
            "images": count}  # fmt: skip


# --------------------------------------------------------------------------- difflab eval clip


def validation_captions(count: int) -> list[str]:
    """The captions of shapes validation scenes ``0..count-1`` (data seed 0): the prompts
    :func:`~difflab.eval.distribution.generate_for_eval` gives a text-to-image model."""
    scenes = ShapesDataset(length=count, split="validation", seed=0)
    return [scenes.scene_and_caption(i)[1] for i in range(count)]


def _suite_layout(folder: Path) -> bool:
    return (folder / "metadata.jsonl").is_file() or any(
        p.is_dir() and p.name.isdigit() for p in folder.iterdir()
    )


def folder_pairs(
    folder: str | Path, prompts: str | Path | None, count: int | None, progress: bool = True
) -> tuple[torch.Tensor, list[str], dict]:
    """Images of ``folder`` with their prompts, and a description for the report.

    A folder in the ShapesEval layout (sub-folders named by prompt index, or a
    ``metadata.jsonl``; see :func:`difflab.eval.shapes.collect_images`), or any folder when
    ``prompts`` names a suite (``"default"``: the shipped one), is paired with that suite's
    prompts. Any other folder is read as ``difflab eval fid --save-images`` writes one: image i
    (sorted paths) shows the caption of shapes validation scene i."""
    from difflab.eval.distribution import count_folder_images, read_image_folder
    from difflab.eval.shapes import collect_images, load_suite

    folder = Path(folder)
    available = count_folder_images(folder)  # also: is it a folder?
    if prompts is not None or _suite_layout(folder):
        suite_path = None if prompts in (None, "default") else prompts
        suite = load_suite(suite_path)
        index = {path: i for path, i in collect_images(folder, suite)}
        images, files = read_image_folder(folder, 3, None, progress)
        keep = [k for k, f in enumerate(files) if (folder / f).resolve() in index]
        keep = keep[:count] if count is not None else keep
        texts = [suite[index[(folder / files[k]).resolve()]]["prompt"] for k in keep]
        source = {"prompts": "suite", "suite": str(suite_path or "default (shipped suite)"),
                  "files": [files[k] for k in keep]}  # fmt: skip
        return images[keep], texts, source
    if count is not None and count > available:
        raise ValueError(f"--num-images {count} but {folder} holds {available} images; pass "
                         f"--num-images {available} or fewer")  # fmt: skip
    images, files = read_image_folder(folder, 3, count, progress)
    source = {"prompts": "captions of shapes validation scenes 0..N-1 (data seed 0), image i "
              "(sorted paths) with caption i", "files": files}  # fmt: skip
    return images, validation_captions(len(files)), source


def model_pairs(
    model: str, prompts: str | Path | None, count: int | None, *, images_per_prompt: int = 1,
    steps: int = 20, sampler: str = "dpmpp_2m", guidance: float | None = None, seed: int = 0,
    batch_size: int = 32, save_images: str | Path | None = None, progress: bool = True,
) -> tuple[torch.Tensor, list[str], dict]:  # fmt: skip
    """Generate images with a text-to-image ``model`` and pair them with their prompts: the
    captions of shapes validation scenes ``0..count-1`` (:func:`generate_for_eval`), or with
    ``prompts`` a ShapesEval suite (``"default"``: the shipped one), ``images_per_prompt`` each
    (:func:`difflab.generate.generate_suite_folder`, written to ``save_images`` or a temporary
    folder)."""
    import tempfile

    from difflab.eval.distribution import DEFAULT_NUM_IMAGES, _save_images, generate_for_eval
    from difflab.zoo import load_pipeline

    pipeline = load_pipeline(model)
    if not hasattr(pipeline, "prompt_encoder"):
        raise ValueError(f"{model} is not a text-to-image model; a CLIP score needs prompts")
    evaluated = {"source": "model", "model": str(model)}
    if prompts is None:
        images, generation = generate_for_eval(
            pipeline, count or DEFAULT_NUM_IMAGES, steps=steps, sampler=sampler,
            guidance=guidance, seed=seed, batch_size=batch_size, progress=progress,
        )  # fmt: skip
        if save_images is not None:
            evaluated["saved_to"] = str(_save_images(images, Path(save_images)))
        return images, validation_captions(len(images)), {**evaluated, "generation": generation}
    from difflab.eval.shapes import load_suite
    from difflab.generate import generate_suite_folder

    suite = load_suite(None if prompts == "default" else prompts)
    guidance = 5.0 if guidance is None else guidance
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(save_images) if save_images is not None else Path(scratch)
        generate_suite_folder(pipeline, folder, suite, images_per_prompt, steps, sampler,
                              guidance, seed, model_name=str(model), progress=progress)  # fmt: skip
        images, texts, source = folder_pairs(folder, prompts, count, progress)
    generation = {"steps": steps, "sampler": sampler, "guidance": guidance, "seed": seed,
                  "images_per_prompt": images_per_prompt}  # fmt: skip
    if save_images is not None:
        evaluated["saved_to"] = str(save_images)
    return images, texts, {**evaluated, **source, "generation": generation}


def evaluate_clip_score(
    *, model: str | None = None, images: str | Path | None = None,
    prompts: str | Path | None = None, clip: str = DEFAULT_CLIP, num_images: int | None = None,
    images_per_prompt: int = 1, steps: int = 20, sampler: str = "dpmpp_2m",
    guidance: float | None = None, seed: int = 0, batch_size: int = 32, resize: bool = True,
    save_images: str | Path | None = None, progress: bool = True,
) -> dict:  # fmt: skip
    """CLIP-T of generated (``model``) or given (``images`` folder) images against their
    prompts (see :func:`folder_pairs`, :func:`model_pairs`) on the CLIP model ``clip`` (a
    shipped name or a folder); returns the report dict ``difflab eval clip`` writes."""
    from difflab import __version__
    from difflab.models.clip import load_clip_model
    from difflab.zoo import resolve_clip_model

    started = time.perf_counter()
    if (model is None) == (images is None):
        raise ValueError("give exactly one of --model (generate images) or --images DIR")
    if num_images is not None and num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {num_images}")
    require_empty_folder(save_images, "--save-images")
    if images is not None:
        from difflab.eval.distribution import count_folder_images

        count_folder_images(images)  # a missing folder is named first
    net = load_clip_model(clip, resize=resize)  # before generating: a bad name fails fast
    if model is not None:
        pixels, texts, evaluated = model_pairs(
            model, prompts, num_images, images_per_prompt=images_per_prompt, steps=steps,
            sampler=sampler, guidance=guidance, seed=seed, batch_size=batch_size,
            save_images=save_images, progress=progress,
        )  # fmt: skip
    else:
        pixels, texts, evaluated = folder_pairs(images, prompts, num_images, progress)
        evaluated = {"source": "folder", "folder": str(images), **evaluated}
    if not texts:
        raise ValueError(f"no images of {images or model} matched a prompt")
    side = net.config.image_size
    scores = clip_t_score(net, pixels, texts)
    cosines = scores.pop("cosines")
    files = evaluated.pop("files", None) or [None] * len(texts)
    height, width = pixels.shape[-2:]
    resized = "" if (height, width) == (side, side) else f"{height}x{width} -> {side}x{side}"
    by_prompt: dict[str, list[float]] = {}
    for text, cosine in zip(texts, cosines, strict=True):
        by_prompt.setdefault(text, []).append(cosine)
    return {
        "metric": "clip",
        "values": scores,
        "num_images": len(texts),
        "clip": {
            "name": str(clip),
            "folder": str(resolve_clip_model(clip)),
            "input_size": side,
            "noise_aware": net.config.noise_aware,
            "resized": resized,  # antialiased bilinear, inside the image tower
        },
        "evaluated": {**evaluated, "size": list(pixels.shape[-2:])},
        "definitions": {
            "clip_t": "mean cosine of each image with its prompt",
            "clip_t_100": "100 * mean(max(cosine, 0))",
            "clipscore": f"mean({HESSEL_W} * max(cosine, 0)), Hessel et al. 2021",
        },
        "per_prompt": {t: sum(c) / len(c) for t, c in by_prompt.items()},
        "per_image": [
            {"image": f if f is not None else i, "prompt": t, "cosine": c}
            for i, (f, t, c) in enumerate(zip(files, texts, cosines, strict=True))
        ],
        "seconds": time.perf_counter() - started,
        "difflab_version": __version__,
    }
