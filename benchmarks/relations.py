"""Do the text-to-image models follow spatial words? Two measurements of a model, and a focused
training experiment, written as docs/reports/relations/relations.md.

ShapesEval scores position prompts ("a circle to the left of a square") at 0.40 for shapes-t2i,
but that figure alone cannot say whether the model follows "left of" at all: an image also fails
when an object is missing or doubled, and a model that ignores the word still passes about half
of the images that hold exactly the two objects. So, for each model:

1. **Layouts** - images of relation prompts, and among those holding exactly one of each named
   object (the *decisive* images), how often the asked relation holds, how often its reverse
   does, and how often neither (GenEval's box-centre rule, threshold 0.1). A model that ignores
   the word gets the relation right about as often as reversed: ``right / (right + reversed)``
   near 0.5. Two prompt sets: the shipped suite's 100 position prompts (shape only, what
   ShapesEval scores) and prompts of two coloured objects ("a red circle to the left of a blue
   square") drawn from the model's world.
2. **What the denoiser reads** - on held-out two-object scenes with a relation caption, the
   denoising error in x0 space (comparable between eps- and v-predicting models) with the true
   caption and with the caption changed: the relation word reversed ("left of" <-> "right of",
   "above" <-> "below"), one colour word replaced, or the caption dropped. A model that uses a
   word has a lower error with the true caption; the colour change is the control, a word every
   model here uses.
3. **What the loss rewards** (``--ideal``) - the same measurement for the Bayes-optimal
   denoiser of the focused training set (:func:`ideal_x0`, exact: a posterior over the training
   scenes), which shows how much lower a denoiser's error, and so its training loss, gets by
   reading the relation, noise level by noise level.

``--train DIR`` first trains a small denoiser on two-object scenes captioned *only* with
relations (the recipe's code: shapes-t2i's autoencoder and frozen text encoder, the Trainer),
optionally in a smaller world (``--shapes circle --colours red,blue``: the only thing left to
learn beyond "two circles" is which one is red), with the noise schedule, prediction type and
loss weighting to test, then measures it like the others. ``--shift K`` shifts the schedule's
log-SNR by -2 log K (Hoogeboom et al. 2023, simple diffusion, Sec. 3.1), so that more training
happens where the layout is hidden by noise. ``--init MODEL`` fine-tunes a trained U-Net model
(``shapes-t2i``) instead, with its own autoencoder, noise schedule, prediction type and (by
default, min-SNR) weighting, on the focused captions.

    python benchmarks/relations.py --model shapes-t2i --model shapes-t2i-small
    python benchmarks/relations.py --train runs/relations/unet --steps 2000 --lr 1e-3
    python benchmarks/relations.py --train runs/relations/min-v --shapes circle --colours red,blue \\
        --scenes 5000 --steps 1000 --lr 1e-3 --schedule cosine --prediction v_prediction \\
        --weighting uniform --shift 4
    python benchmarks/relations.py --ideal --shapes circle --colours red,blue --scenes 5000
    python benchmarks/relations.py --train runs/relations/t2i-one --init shapes-t2i \\
        --wording one --steps 1500 --lr 2e-4 --ema-decay 0.995

Results are kept in ``<report-dir>/relations.json``, one entry per model (a later call replaces
the entries of the models it measures and keeps the others), and the report lists them all;
``--report-only`` rewrites the report from that file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from report_text import write_report_text

from difflab.data.shapes_captions import RELATION_WORDS as CAPTION_RELATION_WORDS

ROOT = Path(__file__).resolve().parents[1]
REVERSED = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# the caption grammar's words for each relation, and back
RELATION_WORDS = {words: relation for relation, words in CAPTION_RELATION_WORDS.items()}
WORLD_COLOURS = ("red", "blue", "green", "yellow", "purple", "white")  # easily told apart
NOISE_LEVELS = (999, 900, 800, 600, 400, 200)
OPPOSITE_PLACE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def scene_config(shapes: str, colours: str):
    """Two-object scenes of the world the options name ("" = every shape / colour)."""
    from difflab.data.shapes_scene import SceneConfig

    options = {}
    if shapes:
        options["shapes"] = tuple(shapes.split(","))
    if colours:
        options["colours"] = tuple(colours.split(","))
    return SceneConfig(min_objects=2, max_objects=2, **options)


@torch.no_grad()
def scene_latents(scenes, vae) -> torch.Tensor:
    """The latents (posterior mean x scaling factor) of the scenes' 32 px flat renders, encoded
    256 at a time."""
    from difflab.data.shapes import render, to_tensor

    pixels = torch.stack([to_tensor(render(scene, 32, "flat")) for scene in scenes])
    chunks = [
        vae.encode(pixels[i : i + 256]).latent_dist.mean * vae.config.scaling_factor
        for i in range(0, len(pixels), 256)
    ]
    return torch.cat(chunks)


def one_wording(scene, rng) -> str:
    """A two-object scene's caption in one wording per layout (``--wording one``): "a red circle
    to the left of a blue square", the pair's order and (where several hold) the relation drawn
    from ``rng``; "two red circles" when the objects match; "a red circle and a blue square" when
    no relation clears GenEval's threshold. The grammar (:func:`captions`) words one scene many
    ways (sizes, "one circle that is red", "an image of ..."); with this one wording the focused
    U-Net learns the relation sooner (see the report's Reading)."""
    from difflab.data.shapes_captions import Phrase, list_text, relation_text
    from difflab.data.shapes_scene import relations_from_boxes

    a, b = scene.objects
    if rng.random() < 0.5:
        a, b = b, a
    if (a.shape, a.colour) == (b.shape, b.colour):
        return list_text([Phrase(a.shape, count=2, colour=a.colour)])
    first, second = Phrase(a.shape, colour=a.colour), Phrase(b.shape, colour=b.colour)
    holding = sorted(relations_from_boxes(a.box(), b.box()))
    if not holding:
        return list_text([first, second])
    return relation_text(first, holding[int(rng.integers(len(holding)))], second)


def focused_schedule(options, shift: float):
    """The recipe's noise schedule, log-SNR shifted by ``--shift``
    (:func:`difflab.schedules.shifted_schedule`)."""
    from dataclasses import replace

    from difflab.recipes.text_to_image import recipe_schedule

    return recipe_schedule(replace(options, schedule_shift=shift))


def trained_denoiser(name: str):
    """``--init``: the U-Net (fp32) and noise schedule of a trained text-to-image model, a shipped
    name or a pipeline folder, to fine-tune on the focused captions with the loss it was trained
    with."""
    from diffusers import UNet2DConditionModel

    from difflab.pipelines.text_to_image import schedule_from_diffusers_config
    from difflab.zoo import resolve_model

    folder = resolve_model(name)
    unet_config = folder / "unet" / "config.json"
    if json.loads(unet_config.read_text()).get("_class_name") != "UNet2DConditionModel":
        raise ValueError(
            f"--init {name}: its denoiser ({unet_config}) is not a U-Net; --init takes a U-Net model such as shapes-t2i"
        )
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(
        folder / "unet", torch_dtype=torch.float32, use_safetensors=True
    )
    return unet, schedule_from_diffusers_config(scheduler_config)


def train_focused(args) -> Path:
    """Train a denoiser on relation-captioned two-object scenes; returns its pipeline folder."""
    from difflab.data.shapes import scene_rng
    from difflab.data.shapes_captions import captions
    from difflab.data.shapes_scene import sample_scene
    from difflab.models.text_encoder import PromptEncoder
    from difflab.pipelines.text_to_image import TextToImagePipeline
    from difflab.recipes.text_to_image import (
        CachedLatents,
        TextToImageRecipe,
        caption_rows,
        encode_captions,
        latent_denoiser,
        load_frozen_vae,
        with_caption_dropout,
    )  # fmt: skip
    from difflab.train import TrainConfig, diffusion_objective, seeded_weights, train

    out = Path(args.train)
    config = scene_config(args.shapes, args.colours)
    options = TextToImageRecipe(
        vae=args.init or "shapes-t2i", denoiser=args.denoiser, dit_layers=args.dit_layers,
        schedule=args.schedule, prediction_type=args.prediction, weighting=args.weighting,
    )  # fmt: skip
    _, vae = load_frozen_vae(options.vae)
    prompt_encoder = PromptEncoder.from_pretrained()
    if args.init:
        denoiser, schedule = trained_denoiser(args.init)
    else:
        schedule = focused_schedule(options, args.shift)
        with seeded_weights(args.seed):  # the Trainer seeds the rest itself
            denoiser = latent_denoiser(options, 8, vae.config.latent_channels)
    scenes, texts = [], []
    for index in range(args.scenes):
        rng = scene_rng(0, "train", index)
        scenes.append(sample_scene(rng, config))
        if args.wording == "one":
            texts.append(one_wording(scenes[-1], rng))
        else:
            texts.append(captions(scenes[-1], rng, 1, relation_probability=1.0)[0])
    latents = scene_latents(scenes, vae)
    unique, rows = caption_rows(texts)
    data = CachedLatents(latents, rows, encode_captions(unique, prompt_encoder))
    objective = with_caption_dropout(
        diffusion_objective(schedule, weighting=args.weighting, cond_key="encoder_hidden_states"),
        prompt_encoder([""], warn=False)[0],
        0.1,
    )
    train_config = TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=100,
        lr_schedule="constant", ema_decay=args.ema_decay, mixed_precision=args.mixed_precision,
        checkpoint_every=500, sample_every=0,
        log_every=50,
    )  # fmt: skip
    result = train(train_config, denoiser, objective, data, out / "run", resume=args.resume)
    model = (result.ema_model or result.model).eval()
    pipeline = TextToImagePipeline(model, vae, prompt_encoder, schedule, name=out.name)
    pipeline.save_pretrained(out / "pipeline", include_text_encoder=False)
    summary = {
        "world": {"shapes": args.shapes or "all", "colours": args.colours or "all"},
        "wording": args.wording,
        "scenes": args.scenes, "steps": result.step, "batch": args.batch_size, "lr": args.lr,
        "denoiser": args.denoiser,
        "schedule": f"{args.init}'s schedule" if args.init else schedule.name,
        "prediction": schedule.prediction_type, "weighting": args.weighting, "seed": args.seed,
        "init": args.init, "ema_decay": args.ema_decay, "mixed_precision": args.mixed_precision,
        "train_seconds": result.total_seconds,
        "command": f"python benchmarks/relations.py {shlex.join(sys.argv[1:])}",
    }  # fmt: skip
    (out / "pipeline" / "relations_training.json").write_text(json.dumps(summary, indent=1))
    return out / "pipeline"


def suite_prompts() -> list[dict]:
    """The shipped ShapesEval suite's position prompts as relation items."""
    from difflab.eval.shapes import load_suite

    items = []
    for entry in load_suite():
        if entry["tag"] != "position":
            continue
        b, a = entry["include"]
        items.append(
            {"prompt": entry["prompt"], "a": (a["shape"], a.get("colour")),
             "relation": a["position"][0], "b": (b["shape"], b.get("colour"))}
        )  # fmt: skip
    return items


def world_prompts(shapes: str, colours: str, count: int = 48, seed: int = 123) -> list[dict]:
    """``count`` prompts of two coloured objects in a relation, the four relations in turn,
    shapes and colours drawn from the world (two different colours; shapes may repeat)."""
    from difflab.data.shapes_captions import Phrase, relation_text
    from difflab.data.shapes_geometry import SHAPES

    shape_list = shapes.split(",") if shapes else list(SHAPES)
    colour_list = colours.split(",") if colours else list(WORLD_COLOURS)
    rng = np.random.default_rng(seed)
    items = []
    for k in range(count):
        sa, sb = (str(s) for s in rng.choice(shape_list, 2, replace=len(shape_list) < 2))
        ca, cb = (str(c) for c in rng.choice(colour_list, 2, replace=False))
        relation = list(REVERSED)[k % 4]
        prompt = relation_text(Phrase(sa, colour=ca), relation, Phrase(sb, colour=cb))
        items.append({"prompt": prompt, "a": (sa, ca), "relation": relation, "b": (sb, cb)})
    return items


def judge(detections, item: dict) -> str:
    """Verdict on one image: "right", "reversed", "neither" (the asked relation and its reverse both fail), or
    "not decisive" (not exactly one detection of each named object)."""
    from difflab.data.shapes_scene import relations_from_boxes

    def named(shape, colour):
        return [d for d in detections if d.shape == shape and colour in (None, d.colour)]

    a, b = named(*item["a"]), named(*item["b"])
    if len(a) != 1 or len(b) != 1:
        return "not decisive"
    found = relations_from_boxes(a[0].box, b[0].box)
    if item["relation"] in found:
        return "right"
    return "reversed" if REVERSED[item["relation"]] in found else "neither"


def layouts(pipeline, items: list[dict], images_per_prompt: int) -> dict:
    """Counts of :func:`judge`'s verdicts over ``images_per_prompt`` images of each item
    (dpmpp_2m, 20 steps, guidance 5; item k's images from seeds k * images_per_prompt + i)."""
    from tqdm import tqdm

    from difflab.eval.shapes_detector import as_float_image, detect

    verdicts = Counter()
    for k, item in enumerate(tqdm(items, desc="layouts", leave=False)):
        images = pipeline(
            [item["prompt"]], num_images_per_prompt=images_per_prompt, steps=20, guidance=5.0,
            sampler="dpmpp_2m", seed=k * images_per_prompt,
        )  # fmt: skip
        for image in images:
            verdicts[judge(detect(as_float_image(np.asarray(image))), item)] += 1
    decisive = verdicts["right"] + verdicts["reversed"]
    share = verdicts["right"] / decisive if decisive else float("nan")
    return {
        **{v: verdicts[v] for v in ("right", "reversed", "neither", "not decisive")},
        "right_share": share,
        "right_share_2se": 2 * np.sqrt(share * (1 - share) / decisive)
        if decisive
        else float("nan"),
    }


def changed_captions(scene_count: int, shapes: str, colours: str, seed: int = 7):
    """Held-out two-object scenes (validation split) with a relation caption naming a colour,
    and each caption with its relation reversed and with its first colour word replaced."""
    from difflab.data.shapes import scene_rng
    from difflab.data.shapes_captions import captions
    from difflab.data.shapes_geometry import COLOURS
    from difflab.data.shapes_scene import sample_scene

    config = scene_config(shapes, colours)
    colour_list = list(config.colours)
    scenes, true, reversed_, recoloured = [], [], [], []
    index = 0
    while len(scenes) < scene_count:
        rng = scene_rng(seed, "validation", index)
        index += 1
        scene = sample_scene(rng, config)
        caption = captions(scene, rng, 1, relation_probability=1.0)[0]
        words = [w for w in RELATION_WORDS if f" {w} " in caption]
        named = [w for w in caption.split() if w in COLOURS]
        if not words or not named:
            continue
        other = next(c for c in colour_list + list(COLOURS) if c not in named)
        scenes.append(scene)
        true.append(caption)
        opposite = CAPTION_RELATION_WORDS[REVERSED[RELATION_WORDS[words[0]]]]
        reversed_.append(caption.replace(f" {words[0]} ", f" {opposite} "))
        recoloured.append(caption.replace(named[0], other, 1))
    return scenes, {"true": true, "relation reversed": reversed_, "colour replaced": recoloured}


def place_captions(scene_count: int, seed: int = 7):
    """Held-out one-object scenes whose object is clearly on the left, right, top or bottom,
    captioned with that place as the shapes grammar words it ("a red circle on the left"; the
    shipped models' list captions name, with probability 0.3, the place of each clearly placed
    object alone of its kind), and each caption with the place reversed ("... on the right")."""
    from difflab.data.shapes import scene_rng
    from difflab.data.shapes_captions import Phrase, list_text
    from difflab.data.shapes_scene import SceneConfig, absolute_position, sample_scene

    config = SceneConfig(min_objects=1, max_objects=1)
    scenes, true, reversed_ = [], [], []
    index = 0
    while len(scenes) < scene_count:
        scene = sample_scene(scene_rng(seed, "validation", index), config)
        index += 1
        thing = scene.objects[0]
        place = absolute_position(thing)
        if place not in OPPOSITE_PLACE:
            continue
        scenes.append(scene)
        true.append(list_text([Phrase(thing.shape, colour=thing.colour, where=place)]))
        opposite = Phrase(thing.shape, colour=thing.colour, where=OPPOSITE_PLACE[place])
        reversed_.append(list_text([opposite]))
    return scenes, {"true": true, "place reversed": reversed_}


def caption_change_effects(x0: torch.Tensor, schedule, conditions: dict, estimate) -> dict:
    """Per noise level t, the x0-space denoising error of ``estimate(x_t, t, alpha_bar,
    condition)`` with the true condition (``conditions["true"]``) and its increase with each other
    condition, over the rows of ``x0`` x 4 noise draws seeded by t (every model measured on the
    same scenes sees the same noise): ``{"error": {t: mean}, "sensitivity": {change: {t: (mean, 2 SE)}}}``."""
    out = {name: {} for name in conditions if name != "true"}
    error = {}
    for t in NOISE_LEVELS:
        generator = torch.Generator().manual_seed(t)
        alpha_bar = schedule.alpha_bar(torch.full((len(x0),), t), like=x0).float()
        errors = {name: [] for name in conditions}
        for _ in range(4):
            noise = torch.randn(x0.shape, generator=generator)
            x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
            for name, condition in conditions.items():
                x0_hat = estimate(x_t, t, alpha_bar, condition)
                errors[name].append(((x0_hat - x0) ** 2).flatten(1).mean(1).double())
        true = torch.cat(errors["true"])
        error[t] = true.mean().item()
        for name in out:
            d = torch.cat(errors[name]) - true
            out[name][t] = (d.mean().item(), 2 * d.std().item() / len(d) ** 0.5)
    return {"error": error, "sensitivity": out}


@torch.no_grad()
def word_sensitivity(pipeline, shapes: str, colours: str, scene_count: int = 256) -> dict:
    """:func:`caption_change_effects` of ``pipeline``'s denoiser on ``scene_count`` held-out
    scenes, the caption changed as :func:`changed_captions` says or dropped (the empty caption of
    classifier-free guidance)."""
    scenes, texts = changed_captions(scene_count, shapes, colours)
    texts["caption dropped"] = [""] * len(scenes)
    return denoiser_effects(pipeline, scenes, texts)


@torch.no_grad()
def denoiser_effects(pipeline, scenes, texts: dict) -> dict:
    """:func:`caption_change_effects` of ``pipeline``'s denoiser on the renders of ``scenes``,
    captioned as ``texts`` says (``texts["true"]`` and the changes)."""
    from difflab.models.networks import call_denoiser
    from difflab.schedules import predicted_x0_and_eps

    schedule = pipeline.schedule
    x0 = scene_latents(scenes, pipeline.vae)
    states = {
        name: pipeline.prompt_encoder(captions, warn=False) for name, captions in texts.items()
    }

    def estimate(x_t, t, alpha_bar, context):
        timesteps = torch.full((len(x_t),), t)
        prediction = call_denoiser(pipeline.unet, x_t, timesteps, encoder_hidden_states=context)
        return predicted_x0_and_eps(prediction, x_t, alpha_bar, schedule.prediction_type)[0]

    return caption_change_effects(x0, schedule, states, estimate)


def ideal_x0(x_t: torch.Tensor, alpha_bar: float, data: torch.Tensor, likelihood: torch.Tensor):
    """The Bayes-optimal x0 estimate E[x0 | x_t, c] when x0 is drawn from the finite set ``data``
    (N x D) and the caption c from p(c | x0): the posterior over the N points is a softmax of the
    Gaussian log-likelihood of x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (Ho et al. 2020, Eq. 4)
    plus log p(c | x_i), and the estimate is its mean (the "ideal denoiser" of a training set,
    Karras et al. 2022, Appendix B.3, Eq. 57, here with a caption). ``x_t``: B x D;
    ``likelihood``: B x N, row j the probability of caption j given each data point."""
    if (likelihood.sum(dim=1) <= 0).any():
        raise ValueError("a caption that no data point can have: its posterior is undefined")
    logits = (alpha_bar**0.5 * x_t @ data.T - alpha_bar * (data**2).sum(1) / 2) / (1 - alpha_bar)
    logits = logits + likelihood.clamp_min(1e-300).log().where(likelihood > 0, -torch.inf)
    return torch.softmax(logits, dim=1) @ data


def caption_likelihoods(captions: list[str], scenes) -> torch.Tensor:
    """p(caption | scene) of :func:`difflab.data.shapes_captions.captions` for relation captions:
    the caption's (phrase, relation, phrase) is drawn uniformly from the scene's options, then
    its wording, so p is the option's share of the scene's options (captions x scenes)."""
    import itertools

    from difflab.data.shapes_captions import (
        PHRASE_VARIANTS,
        PREFIXES,
        _relation_options,
        relation_text,
    )

    def wordings(option):
        a, rel, b = option
        variants = itertools.product(range(PHRASE_VARIANTS), repeat=2)
        return {
            relation_text(a, rel, b, v, prefix)
            for v, prefix in itertools.product(variants, PREFIXES)
        }

    out = torch.zeros(len(captions), len(scenes), dtype=torch.float64)
    column = {c: j for j, c in enumerate(captions)}
    for i, scene in enumerate(scenes):
        options = _relation_options(scene)
        for option in options:
            for text in wordings(option) & column.keys():
                out[column[text], i] += 1 / len(options)
    return out


@torch.no_grad()
def ideal_sensitivity(args) -> dict:
    """:func:`word_sensitivity`'s measurement for the ideal denoiser (:func:`ideal_x0`) of the
    focused training set ``--train`` would draw (``--scenes`` scenes of ``--shapes`` /
    ``--colours``), on the same held-out scenes and noise: what the training loss rewards a
    model for reading the relation word. "caption dropped" conditions on nothing (in a world of
    one red and one blue circle, the caption's only news is the relation)."""
    from difflab.data.shapes import scene_rng
    from difflab.data.shapes_scene import sample_scene
    from difflab.recipes.text_to_image import TextToImageRecipe, load_frozen_vae

    options = TextToImageRecipe(vae="shapes-t2i", schedule=args.schedule)
    _, vae = load_frozen_vae(options.vae)
    schedule = focused_schedule(options, args.shift)
    config = scene_config(args.shapes, args.colours)
    train_scenes = [
        sample_scene(scene_rng(0, "train", index), config) for index in range(args.scenes)
    ]
    scenes, texts = changed_captions(256, args.shapes, args.colours)

    likelihood = {
        "true": caption_likelihoods(texts["true"], train_scenes),
        "relation reversed": caption_likelihoods(texts["relation reversed"], train_scenes),
    }
    # a caption no training scene can have (a rare size-and-colour pair) has no posterior
    kept = (likelihood["true"].sum(1) > 0) & (likelihood["relation reversed"].sum(1) > 0)
    likelihood = {name: p[kept] for name, p in likelihood.items()}
    likelihood["caption dropped"] = torch.ones_like(likelihood["true"])
    x0 = scene_latents([s for s, keep in zip(scenes, kept, strict=True) if keep], vae)
    data = scene_latents(train_scenes, vae).flatten(1).double()
    shape = x0.shape

    def estimate(x_t, t, alpha_bar, likelihood):
        flat = ideal_x0(x_t.flatten(1).double(), alpha_bar.flatten()[0].item(), data, likelihood)
        return flat.reshape(shape).float()

    return {
        **caption_change_effects(x0, schedule, likelihood, estimate),
        "scenes_measured": len(x0),
    }


def measure(name: str, args) -> dict:
    import difflab

    pipeline = difflab.load_pipeline(name)
    trained = Path(name) / "relations_training.json"
    training = json.loads(trained.read_text()) if trained.is_file() else None
    shapes = colours = ""
    if training:
        shapes = "" if training["world"]["shapes"] == "all" else training["world"]["shapes"]
        colours = "" if training["world"]["colours"] == "all" else training["world"]["colours"]
    started = time.perf_counter()
    result = {"model": name, "training": training, "images_per_prompt": args.images_per_prompt}
    if not shapes and not colours:
        result["suite"] = layouts(pipeline, suite_prompts(), args.images_per_prompt)
    result["world"] = layouts(pipeline, world_prompts(shapes, colours), args.images_per_prompt)
    result.update(word_sensitivity(pipeline, shapes, colours))
    if not training:  # the shipped world's captions name places; the focused worlds' do not
        places = denoiser_effects(pipeline, *place_captions(256))
        result["sensitivity"]["place reversed"] = places["sensitivity"]["place reversed"]
    result["seconds"] = time.perf_counter() - started
    return result


def write_report(args, results: dict, report_dir: Path) -> Path:
    lines = [
        "# Do the text-to-image models follow spatial words?",
        "",
        f"Latest command: `python benchmarks/relations.py {shlex.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; date {datetime.date.today().isoformat()}.",
        "",
        "Method: see the docstring of `benchmarks/relations.py`. Images: dpmpp_2m, 20 steps, "
        "guidance 5 (how many per prompt: see Runs). *Decisive* images hold exactly one of "
        "each named object; *right share* = right / (right + reversed) among them (0.5 = the "
        "word is ignored), with 2 SE.",
        "",
        "## Layouts",
        "",
        "| model | trained on | prompts | right | reversed | neither | not decisive | right share |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        world = _trained_on(r)
        for part, label in (
            ("suite", "suite position (shape only)"),
            ("world", "two coloured objects"),
        ):
            if part in r:
                v = r[part]
                share = (
                    f"{v['right_share']:.2f} ± {v['right_share_2se']:.2f}"
                    if v["right"] + v["reversed"]
                    else "- (none decisive)"
                )
                lines.append(
                    f"| {name} | {world} | {label} | {v['right']} | {v['reversed']} | "
                    f"{v['neither']} | {v['not decisive']} | {share} |"
                )
    lines += ["", "## What the denoiser reads"]
    lines += _noise_level_table(
        "Increase of the x0-space denoising error (x 1000) when the caption is changed, on 256 "
        "held-out two-object scenes x 4 noise draws per level, ± 2 SE. Positive: the model "
        "uses the word. *place reversed*: on 256 held-out one-object scenes whose object is "
        'clearly on the left, right, top or bottom, "a red circle on the left" against "... on '
        'the right" (the absolute place, no second object to compare with).',
        ("model", "change"),
    )
    for name, r in results.items():
        for change, levels in r["sensitivity"].items():
            cells = [
                f"{1000 * m:+.2f} ± {1000 * s:.2f}"
                for m, s in (levels[str(t)] for t in NOISE_LEVELS)
            ]
            lines.append(f"| {name} | {change} | " + " | ".join(cells) + " |")
    lines += _noise_level_table(
        "Denoising error itself (x0 space, x 1000) with the true caption, on the held-out "
        "scenes of each model's world and the same noise (the ideal: on the scenes it measured). "
        "In one world and on one schedule, a model at the ideal's *caption dropped* error (its "
        "error plus that row's increase) has learnt all but what the caption says.",
        ("model",),
    )
    for name, r in results.items():
        if "error" in r:
            cells = [f"{1000 * r['error'][str(t)]:.1f}" for t in NOISE_LEVELS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Runs", ""]
    for name, r in results.items():
        if "scenes_measured" in r:
            how = f"exact, on the {r['scenes_measured']} held-out scenes whose captions it can have"
        else:
            how = f"{r.get('images_per_prompt', 4)} images per prompt"
        trained = (r.get("training") or {}).get("command")
        trained = f"trained by `{trained}`; measured by " if trained else ""
        lines.append(
            f"- `{name}`: {trained}{r['command']} ({how}; {r['seconds'] / 60:.1f} min to measure)"
        )
    return write_report_text(report_dir / "relations.md", lines)


def _noise_level_table(intro: str, first_columns: tuple[str, ...]) -> list[str]:
    """A paragraph and the header of a table with a column per noise level."""
    header = " | ".join(first_columns + tuple(f"t = {t}" for t in NOISE_LEVELS))
    rule = "---|" * len(first_columns) + "---:|" * len(NOISE_LEVELS)
    return ["", intro, "", f"| {header} |", f"|{rule}"]


def _trained_on(result: dict) -> str:
    training = result.get("training")
    if not training:
        return "the shapes world (shipped recipe)"
    t = training
    minutes = t["train_seconds"] / 60
    return (
        ("one wording per layout" if t.get("wording") == "one" else "relation captions only")
        + (f", fine-tuning {t['init']}" if t.get("init") else "")
        + f", 2 objects, shapes {t['world']['shapes']}, colours "
        f"{t['world']['colours']}; {t['denoiser']}, {t['schedule']}, {t['prediction']}, "
        f"{t['weighting']}; {t['steps']} x {t['batch']} ({minutes:.0f} min"
        + (f", seed {t['seed']})" if "seed" in t else ", initial weights not seeded)")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="name or pipeline folder")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--report-dir", default=str(ROOT / "docs" / "reports" / "relations"))
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the stored JSON"
    )
    parser.add_argument("--train", default="", help="train a focused model into this folder")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --train")
    parser.add_argument(
        "--ideal",
        action="store_true",
        help="measure the ideal denoiser of the training set --train would draw",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128, help="of --train (a GPU takes 2048)")
    parser.add_argument(
        "--wording", default="grammar", choices=("grammar", "one"),
        help="--train captions: the caption grammar's, or one wording per layout (one_wording)",
    )  # fmt: skip
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--scenes", type=int, default=20000)
    parser.add_argument("--shapes", default="", help="comma-separated; default every shape")
    parser.add_argument("--colours", default="", help="comma-separated; default every colour")
    parser.add_argument("--denoiser", default="unet", choices=("unet", "dit"))
    parser.add_argument("--dit-layers", type=int, default=6)
    parser.add_argument("--schedule", default="scaled_linear")
    parser.add_argument("--prediction", default="epsilon")
    parser.add_argument("--weighting", default="min_snr")
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="of the focused model's weights")
    parser.add_argument(
        "--init", default="",
        help="--train fine-tunes this trained U-Net model (name or folder) with its own schedule",
    )  # fmt: skip
    parser.add_argument("--ema-decay", type=float, default=0.999, help="of --train")
    parser.add_argument(
        "--mixed-precision", default="no", choices=("no", "bf16", "fp16"),
        help="of --train (accelerate's; bf16 on a GPU)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.init:
        fixed = ("denoiser", "schedule", "prediction", "shift")  # --init takes the model's own
        clashes = [f"--{key}" for key in fixed if getattr(args, key) != parser.get_default(key)]
        if clashes:
            parser.error(
                f"--init keeps the model's own denoiser and noise schedule; drop {', '.join(clashes)}"
            )
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    models = list(args.model)
    report_dir = Path(args.report_dir)
    store = report_dir / "relations.json"
    if args.report_only:
        print(f"report written to {write_report(args, json.loads(store.read_text()), report_dir)}")
        return
    if args.train:
        models.append(str(train_focused(args)))
    if not models and not args.ideal:
        parser.error("name a --model to measure, a --train folder or --ideal")
    report_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(store.read_text()) if store.is_file() else {}

    def keep(name: str, result: dict) -> None:
        """Add one model's result, with this command, to the stored results on disk."""
        result["command"] = f"`python benchmarks/relations.py {shlex.join(sys.argv[1:])}`"
        results[name] = json.loads(json.dumps(result))  # noise levels as strings, as stored
        store.write_text(json.dumps(results, indent=1))

    if args.ideal:
        started = time.perf_counter()
        world = f"shapes {args.shapes or 'all'}, colours {args.colours or 'all'}"
        schedule = args.schedule + (f"-shift{args.shift:g}" if args.shift != 1.0 else "")
        name = f"ideal denoiser of {args.scenes} training scenes ({world}; {schedule})"
        result = {"model": name, **ideal_sensitivity(args)}
        result["seconds"] = time.perf_counter() - started
        keep(name, result)
    for name in models:
        result = measure(name, args)
        keep(name, result)
        print(json.dumps({k: result[k] for k in ("model", "world")}, indent=1))
    print(f"report written to {write_report(args, results, report_dir)}")


if __name__ == "__main__":
    main()
