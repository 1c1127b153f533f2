"""Guidance and cascades, measured (docs/guidance.md). Four parts, each written as JSON under
``<report-dir>/guidance_cascades/`` and gathered into ``<report-dir>/guidance_cascades.md``
(with plots) every time a part finishes, so parts can run on different days:

- ``classifier``: classifier guidance of the unconditional shapes model toward (colour, shape)
  targets - attribute accuracy by ShapesEval's detector and diversity (mean pairwise distance in
  shapes-features space) against the scale s - with ``--clip`` the same for CLIP guidance toward
  "a <colour> <shape>", and with ``--cfg-model`` classifier-free guidance of a text-conditional
  pixel model prompted so; on digits, classifier
  guidance of the digits model's null-class branch against classifier-free guidance of the same
  network (accuracy by the independent SVC of difflab.eval.digits), compared at matched
  fidelity (Dhariwal & Nichol 2021, Sec. 4.3; Ho & Salimans 2022, Sec. 4).
- ``cascade``: a 16 -> 32 (-> 64) cascade against a single-stage 32 px model trained for the same
  total time: ShapesEval and FID, at several augmentation levels (Ho et al. 2022, Sec. 4.3).
- ``threshold``: no thresholding, static clipping and dynamic thresholding at high guidance
  weights: saturation (fraction of pixel values at 0 or 255) and ShapesEval (Saharia et al.
  2022, Sec. 2.3 and 4.3).
- ``unclip``: zero-shot text-to-image ShapesEval and FID with the prior and with the CLIP text
  embedding decoded directly; image variations' CLIP-I with their source and their diversity
  (Ramesh et al. 2022, Sec. 3.1 and 5).

    python benchmarks/guidance_cascades.py classifier --uncond runs/shapes-uncond/pipeline \\
        --classifier runs/shapes-classifier/features --clip shapes-clip \\
        --cfg-model runs/shapes-t2i-pixel32/pipeline \\
        --digits digits --digits-classifier runs/digits-classifier/features
    python benchmarks/guidance_cascades.py cascade --cascade runs/shapes-sr-32/cascade \\
        --single runs/shapes-t2i-pixel32/pipeline --cascade-64 runs/shapes-sr-64/cascade \\
        --cascade-runs runs/shapes-cascade-base runs/shapes-sr-32 \\
        --single-runs runs/shapes-t2i-pixel32
    python benchmarks/guidance_cascades.py threshold --model runs/shapes-t2i-pixel32/pipeline
    python benchmarks/guidance_cascades.py unclip --unclip runs/shapes-unclip-prior/pipeline
    python benchmarks/guidance_cascades.py report          # rewrite the report from the JSON
    python benchmarks/guidance_cascades.py smoke --report-dir /tmp/gc   # tiny random models

``smoke`` builds tiny random-weight models and runs every part in a minute or so (the test
suite runs it); its figures mean nothing. Never point ``--report-dir`` of a smoke run at docs/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_text import write_report_text  # noqa: E402

PARTS = ("classifier", "cascade", "threshold", "unclip")
SHAPES_TARGETS = (
    ("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"),
    ("purple", "heart"), ("orange", "cross"), ("pink", "ring"), ("white", "square"),
)  # fmt: skip
CLASSIFIER_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
CFG_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)
THRESHOLD_WEIGHTS = (1.0, 3.0, 5.0, 10.0, 20.0, 30.0)
THRESHOLD_MODES = ("none", "static", "dynamic")


class WithOptions:
    """A pipeline whose ``latents`` calls always get ``options`` (a guide, ``use_prior``, ...),
    for evaluation helpers that call ``latents`` themselves; everything else is the pipeline's."""

    def __init__(self, pipeline, **options) -> None:
        self.pipeline, self.options = pipeline, options

    def __getattr__(self, name: str):
        return getattr(self.pipeline, name)

    def latents(self, *args, **kwargs):
        return self.pipeline.latents(*args, **{**kwargs, **self.options})


class BilinearlyUpsampled(WithOptions):
    """A pipeline whose images are upsampled (bilinear) to ``size``: a cascade's base model
    alone, scored at the cascade's resolution - what the SR stage adds is the difference."""

    def __init__(self, pipeline, size: int, **options) -> None:
        super().__init__(pipeline, **options)
        self.size = size

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from difflab.pipelines.cascade import upsample

        return upsample(self.pipeline.decode(latents), self.size).clamp(-1, 1)


def machine() -> str:
    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _features(name: str):
    from difflab.models.feature_nets import load_feature_network

    return load_feature_network(name, resize=True)


@torch.no_grad()
def _embed(net, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(images[i : i + 256]) for i in range(0, len(images), 256)])


def _timed(fn, *args):
    """``(fn(*args), seconds it took)``."""
    began = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - began


def pixel_threshold(args) -> dict:
    """The x0 thresholding that pixel-space sampling gets in the classifier and cascade parts,
    as pipeline options (``--x0-clip``, default ``static``: clip the implied x0 to [-1, 1] at
    every step, as DDPM's reference sampler does, Ho et al. 2020). Named explicitly, so a
    folder's own ``clip_sample`` default does not decide it. Without it the short-trained pixel
    models here drift out of range - the threshold part's "none" rows measure how far."""
    return {"threshold": args.x0_clip}


# --------------------------------------------------------------------------- classifier


def trade_off_row(args, method: str, weight: float, targets, make, score, features) -> dict:
    """One point of a fidelity-diversity curve: for each target k, ``make(target, seed)``
    draws ``--images-per-target`` images (seed ``--seed + 1000 k``); ``score(images, target)``
    gives their figures (``fidelity`` among them) and the mean pairwise distance of their
    ``features`` their diversity. Every figure is averaged over the targets."""
    from difflab.eval.guidance import pairwise_distance

    scores, diversity, seconds = [], [], 0.0
    for k, target in enumerate(targets):
        images, spent = _timed(make, target, args.seed + 1000 * k)
        seconds += spent
        scores.append(score(images, target))
        diversity.append(pairwise_distance(_embed(features, images)))
    row = {"method": method, "weight": weight,
           **{key: sum(s[key] for s in scores) / len(scores) for key in scores[0]},
           "diversity": sum(diversity) / len(diversity),
           "seconds_per_image": seconds / (args.images_per_target * len(targets))}  # fmt: skip
    print(f"{method} {weight:g}: fidelity {row['fidelity']:.3f} diversity "
          f"{row['diversity']:.3f}", flush=True)  # fmt: skip
    return row


def shapes_guidance_rows(args) -> list[dict]:
    """Classifier guidance (and CLIP guidance with ``--clip``) of the unconditional model, and
    classifier-free guidance of ``--cfg-model``, toward each (colour, shape) target: fidelity =
    both attributes detected, ``bound`` = one object carries both."""
    from difflab.eval.guidance import attribute_hits
    from difflab.guidance import classifier_guide
    from difflab.zoo import load_pipeline

    targets, n = SHAPES_TARGETS[: args.targets], args.images_per_target
    clip_x0 = pixel_threshold(args)

    def score(images, target):
        hits = attribute_hits(images, [("colour", target[0]), ("shape", target[1])])
        return {"fidelity": hits["all"], "bound": hits["bound"]}

    def row(method, weight, make):
        return trade_off_row(args, method, weight, targets, make, score, features)

    features = _features(args.features)
    uncond = load_pipeline(args.uncond)
    classifier = _features(args.classifier)
    rows = []
    for scale in args.scales:

        def make(target, seed, scale=scale):
            pairs = [("colour", target[0]), ("shape", target[1])]
            guide = classifier_guide(classifier, pairs, scale) if scale else None
            return uncond.sample(n, args.steps, 1.0, sampler=args.sampler, seed=seed,
                                 guide=guide, **clip_x0)  # fmt: skip

        rows.append(row("classifier guidance", scale, make))
    if args.clip:
        from difflab.guidance import clip_guide
        from difflab.models.clip import load_clip_model

        clip = load_clip_model(args.clip, resize=True)
        for scale in args.clip_scales:

            def make(target, seed, scale=scale):
                guide = clip_guide(clip, [f"a {target[0]} {target[1]}"], scale)
                return uncond.sample(n, args.steps, 1.0, sampler=args.sampler, seed=seed,
                                     guide=guide, **clip_x0)  # fmt: skip

            rows.append(row("CLIP guidance", scale, make))
    if args.cfg_model:
        text = load_pipeline(args.cfg_model)
        for weight in args.cfg_weights:

            def make(target, seed, weight=weight):
                prompt = f"a {target[0]} {target[1]}"
                return text.decode(text.latents([prompt], n, args.steps, weight, args.sampler,
                                                seed, **clip_x0))  # fmt: skip

            rows.append(row("classifier-free guidance", weight, make))
    return rows


def digits_guidance_rows(args) -> list[dict]:
    """Classifier guidance of the digits model's null-class branch, and classifier-free
    guidance of the same network, toward each digit: accuracy by the SVC, diversity in
    digits-features space."""
    from difflab.data.real import DIGIT_WORDS
    from difflab.eval.digits import class_accuracy, fit_digits_classifier
    from difflab.guidance import classifier_guide
    from difflab.zoo import load_pipeline

    pipe = load_pipeline(args.digits)
    classifier = _features(args.digits_classifier)
    features = _features(args.digits_features)
    svc = fit_digits_classifier()
    n, classes = args.images_per_target, list(range(min(args.digit_classes, 10)))
    clip_x0 = pixel_threshold(args)

    def score(images, c):
        return {"fidelity": class_accuracy(svc, images, [c] * n)["accuracy"]}

    rows = []
    for scale in args.scales:

        def make(c, seed, scale=scale):
            guide = (
                classifier_guide(classifier, [("digit", DIGIT_WORDS[c])], scale) if scale else None
            )
            return pipe.sample([None] * n, args.steps, 1.0, sampler=args.sampler, seed=seed,
                               guide=guide, **clip_x0)  # fmt: skip

        rows.append(trade_off_row(args, "classifier guidance", scale, classes, make, score,
                                  features))  # fmt: skip
    for weight in args.cfg_weights:

        def make(c, seed, weight=weight):
            return pipe.sample([c] * n, args.steps, weight, sampler=args.sampler, seed=seed,
                               **clip_x0)  # fmt: skip

        rows.append(trade_off_row(args, "classifier-free guidance", weight, classes, make, score,
                                  features))  # fmt: skip
    return rows


def run_classifier(args) -> dict:
    result = {"settings": _settings(args, "scales", "cfg_weights", "images_per_target", "x0_clip")}
    if args.uncond:
        result["shapes"] = shapes_guidance_rows(args)
        from difflab.eval.guidance import pairwise_distance

        real, _ = _reference(args.images_per_target, 32)
        result["shapes_real_diversity"] = pairwise_distance(_embed(_features(args.features), real))
    if args.digits:
        result["digits"] = digits_guidance_rows(args)
    return result


# --------------------------------------------------------------------------- cascade


def _reference(count: int, size: int):
    from difflab.eval.distribution import reference_images

    return reference_images("shapes", count, size, 3, progress=False)


def _train_seconds(runs: list[str] | None) -> float | None:
    if not runs:
        return None
    total = 0.0
    for run in runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            return None
        total += json.loads(path.read_text())["train_seconds"]
    return total


def _evaluate(args, pipeline, reference, **options) -> dict:
    from difflab.eval.text_to_image import evaluate_text_to_image

    target = WithOptions(pipeline, **options) if options else pipeline
    return evaluate_text_to_image(
        target, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
        suite=_suite(args), images_per_prompt=args.images_per_prompt, reference=reference,
        seed=args.seed, batch_size=args.batch_size,
    )  # fmt: skip


def _suite(args) -> list[dict]:
    from difflab.eval.shapes import load_suite

    suite = load_suite()
    return suite[: args.suite_limit] if args.suite_limit else suite


def _reference_features(args):
    from difflab.eval.text_to_image import Reference

    return Reference.shapes(args.fid_images, network=args.features) if args.fid_images else None


PREDICTION_NAMES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def prediction_types(pipeline) -> str:
    """What each stage of a pipeline predicts ("eps", "v" or "x0"; a cascade's stages joined
    by " / ")."""
    stages = [pipeline.base, *pipeline.stages] if hasattr(pipeline, "stages") else [pipeline]
    return " / ".join(PREDICTION_NAMES[s.schedule.prediction_type] for s in stages)


CASCADE_SETTINGS = ("aug_levels", "guidance", "x0_clip")  # beyond _settings' common ones


def run_cascade(args) -> dict:
    from difflab.zoo import load_pipeline

    reference = _reference_features(args)
    clip_x0 = pixel_threshold(args)
    rows = []
    models = [
        ("single-stage 32 px", args.single, args.single_runs, None),
        ("cascade 16 -> 32", args.cascade, args.cascade_runs, args.aug_levels),
        ("cascade 16 -> 32 -> 64", args.cascade_64, args.cascade_64_runs, args.aug_levels),
    ]
    for name, folder, runs, levels in models:
        if not folder:
            continue
        pipeline = load_pipeline(folder)
        if folder == args.cascade:  # the base alone first: where the cascade's figures start
            base = BilinearlyUpsampled(pipeline.base, pipeline.size)
            result = _evaluate(args, base, reference, **clip_x0)
            rows.append({"model": f"cascade base {pipeline.base.latent_shape[-1]} px, bilinear "
                                  f"to {pipeline.size}", "folder": folder, "aug_timestep": None,
                         "prediction": prediction_types(pipeline.base),
                         "train_seconds": _train_seconds((runs or [])[:1]), **result})  # fmt: skip
        for level in levels or [None]:
            if level is not None:
                for stage in pipeline.stages:
                    stage.aug_timestep = level
            result = _evaluate(args, pipeline, reference, **clip_x0)
            rows.append({"model": name, "folder": folder, "aug_timestep": level,
                         "prediction": prediction_types(pipeline),
                         "train_seconds": _train_seconds(runs), **result})  # fmt: skip
            print(f"{name} aug {level}: ShapesEval {result['shapes']['overall']:.3f} FID "
                  f"{result.get('fid', float('nan')):.2f}", flush=True)  # fmt: skip
    return {"settings": _settings(args, *CASCADE_SETTINGS), "rows": rows}


# --------------------------------------------------------------------------- threshold


def run_threshold(args) -> dict:
    from difflab.eval.guidance import saturation
    from difflab.eval.shapes import score_images
    from difflab.eval.text_to_image import suite_images
    from difflab.zoo import load_pipeline

    pipeline = load_pipeline(args.model)
    suite = _suite(args)
    real, _ = _reference(min(len(suite), 512), 32)
    rows = []
    for weight in args.weights:
        for mode in THRESHOLD_MODES:
            thresholding = WithOptions(
                pipeline, threshold=mode, threshold_percentile=args.percentile
            )
            images, indices, seconds = suite_images(
                thresholding, suite, args.images_per_prompt,
                steps=args.steps, sampler=args.sampler, guidance=weight, seed=args.seed,
                batch_size=args.batch_size,
            )  # fmt: skip
            shapes = score_images(images, indices, suite)
            rows.append({"weight": weight, "mode": mode, "saturation": saturation(images),
                         "shapes": {"overall": shapes["overall"],
                                    "tasks": {t: v["score"] for t, v in shapes["tasks"].items()}},
                         "seconds_per_image": seconds / len(indices)})  # fmt: skip
            print(f"w={weight:g} {mode}: saturation {rows[-1]['saturation']:.4f} ShapesEval "
                  f"{shapes['overall']:.3f}", flush=True)  # fmt: skip
    return {"settings": _settings(args, "weights", "percentile"), "rows": rows,
            "real_saturation": saturation(real)}  # fmt: skip


# --------------------------------------------------------------------------- unclip


@torch.no_grad()
def variation_figures(args, pipeline) -> dict:
    """CLIP-I and feature cosine between each source render and its variations (and, as the
    floor they are read against, between each source and another source), and the diversity
    among a source's variations (against that among the sources themselves)."""
    from difflab.eval.clip_score import clip_i_score
    from difflab.eval.guidance import pairwise_distance

    sources, _ = _reference(args.variation_sources, pipeline.clip.config.image_size)
    v = args.variations
    made = pipeline.variations(sources, v, args.steps, sampler=args.sampler, seed=args.seed)
    repeated = sources.repeat_interleave(v, 0)
    features = _features(args.features)
    a, b = _embed(features, repeated), _embed(features, made)
    per_source = [pairwise_distance(b[i * v : (i + 1) * v]) for i in range(len(sources))]
    source_features = _embed(features, sources)
    others = sources.roll(1, 0)  # each source against another (unrelated) render
    return {
        "clip_i": clip_i_score(pipeline.clip, repeated, made),
        "feature_cosine": float(torch.nn.functional.cosine_similarity(a, b).mean()),
        "clip_i_other_source": clip_i_score(pipeline.clip, sources, others),
        "feature_cosine_other_source": float(
            torch.nn.functional.cosine_similarity(
                source_features, source_features.roll(1, 0)
            ).mean()
        ),  # fmt: skip
        "variation_diversity": sum(per_source) / len(per_source),
        "source_diversity": pairwise_distance(source_features),
        "sources": len(sources),
        "variations_per_source": v,
    }


def run_unclip(args) -> dict:
    from difflab.zoo import load_pipeline

    pipeline = load_pipeline(args.unclip)
    reference = _reference_features(args)
    rows = []
    for use_prior in (True, False):
        if use_prior and pipeline.prior is None:
            continue
        result = _evaluate(args, pipeline, reference, use_prior=use_prior)
        name = "prior" if use_prior else "text embedding (no prior)"
        rows.append({"conditioning": name, **result})
        print(f"unCLIP {name}: ShapesEval {result['shapes']['overall']:.3f} FID "
              f"{result.get('fid', float('nan')):.2f}", flush=True)  # fmt: skip
    variations = variation_figures(args, pipeline)
    print(f"variations: CLIP-I {variations['clip_i']:.3f}", flush=True)
    return {"settings": _settings(args, "guidance", "variations"), "rows": rows,
            "variations": variations}  # fmt: skip


# --------------------------------------------------------------------------- report


def _settings(args, *names: str) -> dict:
    common = ("steps", "sampler", "seed", "images_per_prompt", "fid_images", "suite_limit")
    return {k: getattr(args, k) for k in (*common, *names) if hasattr(args, k)}


def _plot_trade_off(parts: dict, path: Path) -> bool:
    curves = [(name, parts["classifier"].get(name)) for name in ("shapes", "digits")]
    curves = [(name, rows) for name, rows in curves if rows]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves, strict=True):
        for method, marker in (("classifier guidance", "o-"), ("CLIP guidance", "^-"),
                               ("classifier-free guidance", "s-")):  # fmt: skip
            mine = [r for r in rows if r["method"] == method]
            if mine:
                ax.plot([r["diversity"] for r in mine], [r["fidelity"] for r in mine], marker,
                        label=method)  # fmt: skip
                for r in mine:
                    ax.annotate(f"{r['weight']:g}", (r["diversity"], r["fidelity"]), fontsize=7)
        ax.set_xlabel("diversity (mean pairwise feature distance)")
        ax.set_ylabel("attribute accuracy" if name == "shapes" else "class accuracy (SVC)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _plot_threshold(part: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode in THRESHOLD_MODES:
        rows = [r for r in part["rows"] if r["mode"] == mode]
        weights = [r["weight"] for r in rows]
        axes[0].plot(weights, [r["saturation"] for r in rows], "o-", label=mode)
        axes[1].plot(weights, [r["shapes"]["overall"] for r in rows], "o-", label=mode)
    axes[0].axhline(part["real_saturation"], color="grey", ls="--", label="real renders")
    for ax, title in zip(axes, ("saturation (fraction at 0 or 255)", "ShapesEval overall"),
                         strict=True):  # fmt: skip
        ax.set_xlabel("guidance weight w")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def x0_clip_line(part: dict) -> list[str]:
    """What the part's pixel-space sampling did to the implied x0 (runs before ``--x0-clip``
    existed did nothing)."""
    mode = part["settings"].get("x0_clip", "none")
    what = {"none": "not thresholded", "static": "clipped to [-1, 1] (DDPM's sampler)",
            "dynamic": "dynamically thresholded"}[mode]  # fmt: skip
    return [f"Pixel-space sampling: the implied x0 {what} at every step (`--x0-clip {mode}`).", ""]


def classifier_section(part: dict) -> list[str]:
    from difflab.eval.guidance import matched_fidelity

    lines = ["## Classifier guidance against classifier-free guidance", "", *x0_clip_line(part)]
    for name, what in (("shapes", "attributes present (both / one object carries both)"),
                       ("digits", "class accuracy (SVC)")):  # fmt: skip
        rows = part.get(name)
        if not rows:
            continue
        lines += [f"### {name}", "", f"| method | s or w | {what} | diversity | s/image |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for r in rows:
            fidelity = f"{r['fidelity']:.3f}" + (f" / {r['bound']:.3f}" if "bound" in r else "")
            lines.append(f"| {r['method']} | {r['weight']:g} | {fidelity} | "
                         f"{r['diversity']:.3f} | {r['seconds_per_image']:.4f} |")  # fmt: skip
        cg = [r for r in rows if r["method"] == "classifier guidance"]
        cfg = [r for r in rows if r["method"] == "classifier-free guidance"]
        matched = [(r, matched_fidelity([c["fidelity"] for c in cg], [c["diversity"] for c in cg],
                                        r["fidelity"])) for r in cfg]  # fmt: skip
        if any(d is not None for _, d in matched):
            lines += ["", "At matched fidelity (classifier guidance's diversity interpolated at "
                      "each classifier-free point's accuracy):", "",
                      "| CFG w | accuracy | CFG diversity | CG diversity |", "|---:|---:|---:|---:|"]  # fmt: skip
            lines += [f"| {r['weight']:g} | {r['fidelity']:.3f} | {r['diversity']:.3f} | "
                      f"{_fmt(d)} |" for r, d in matched]  # fmt: skip
        lines.append("")
    if "shapes_real_diversity" in part:
        lines += [f"Diversity of real renders: {part['shapes_real_diversity']:.3f}. On shapes, "
                  "classifier and CLIP guidance steer the unconditional model (scenes of 1-4 "
                  "objects) while classifier-free guidance prompts a text model with one-object "
                  "captions, so diversities differ by construction; on digits both guide the "
                  "same network.", ""]  # fmt: skip
    return lines


def cascade_section(part: dict) -> list[str]:
    lines = ["## Cascade against a single-stage model", "", *x0_clip_line(part),
             "| model | predicts | aug level | train min | ShapesEval | FID | precision | recall "
             "| s/image |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in part["rows"]:
        minutes = None if r["train_seconds"] is None else r["train_seconds"] / 60
        lines.append(
            f"| {r['model']} | {r.get('prediction', '-')} | {_fmt(r['aug_timestep'], 'd')} | "
            f"{_fmt(minutes, '.1f')} | "
            f"{r['shapes']['overall']:.3f} | {_fmt(r.get('fid'), '.2f')} | "
            f"{_fmt(r.get('precision'))} | {_fmt(r.get('recall'))} | "
            f"{r['seconds_per_image']:.4f} |"
        )
    return [*lines, ""]


def threshold_section(part: dict, plot: str) -> list[str]:
    lines = ["## Dynamic thresholding against static clipping", "", f"![thresholding]({plot})", "",
             f"Saturation of real renders: {part['real_saturation']:.4f}.", "",
             "| w | thresholding | saturation | ShapesEval |", "|---:|---|---:|---:|"]  # fmt: skip
    lines += [f"| {r['weight']:g} | {r['mode']} | {r['saturation']:.4f} | "
              f"{r['shapes']['overall']:.3f} |" for r in part["rows"]]  # fmt: skip
    return [*lines, ""]


def unclip_section(part: dict) -> list[str]:
    lines = ["## unCLIP", "", "| conditioning | ShapesEval | FID | s/image |",
             "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['conditioning']} | {r['shapes']['overall']:.3f} | "
              f"{_fmt(r.get('fid'), '.2f')} | {r['seconds_per_image']:.4f} |"
              for r in part["rows"]]  # fmt: skip
    v = part["variations"]
    floor = ""
    if "clip_i_other_source" in v:
        floor = (f" (another source: {v['clip_i_other_source']:.3f} / "
                 f"{v['feature_cosine_other_source']:.3f})")  # fmt: skip
    lines += ["", f"Variations ({v['sources']} validation renders x {v['variations_per_source']}):"
              f" CLIP-I with the source {v['clip_i']:.3f} (shapes-clip, the model the decoder "
              f"is conditioned on); shapes-features cosine {v['feature_cosine']:.3f}{floor}; "
              f"diversity among a source's variations {v['variation_diversity']:.3f} against "
              f"{v['source_diversity']:.3f} among the sources.", ""]  # fmt: skip
    return lines


def write_report(report_dir: Path) -> Path:
    data = report_dir / "guidance_cascades"
    parts = {p: json.loads((data / f"{p}.json").read_text()) for p in PARTS
             if (data / f"{p}.json").is_file()}  # fmt: skip
    lines = ["# Guidance and cascades", "",
             "Written by `benchmarks/guidance_cascades.py` from the JSON under "
             "`guidance_cascades/` (each part records its command, machine and date). Methods "
             "and notation: [docs/guidance.md](../guidance.md).", ""]  # fmt: skip
    for name, part in parts.items():
        commands = ", then ".join(f"`{c}`" for c in part.get("commands", [part["command"]]))
        lines += [f"- `{name}`: {commands} ({part['date']}, {part['machine']}, "
                  f"{part['minutes']:.1f} min)"]  # fmt: skip
    if parts:
        lines.append("")
    if "classifier" in parts:
        if _plot_trade_off(parts, report_dir / "guidance_classifier.png"):
            lines += ["![trade-off](guidance_classifier.png)", ""]
        lines += classifier_section(parts["classifier"])
    if "cascade" in parts:
        lines += cascade_section(parts["cascade"])
    if "threshold" in parts:
        _plot_threshold(parts["threshold"], report_dir / "guidance_threshold.png")
        lines += threshold_section(parts["threshold"], "guidance_threshold.png")
    if "unclip" in parts:
        lines += unclip_section(parts["unclip"])
    missing = [p for p in PARTS if p not in parts]
    if missing:
        lines += [f"Not yet measured: {', '.join(missing)}.", ""]
    return write_report_text(report_dir / "guidance_cascades.md", lines)


def run_part(args, part: str) -> Path:
    runner = {"classifier": run_classifier, "cascade": run_cascade,
              "threshold": run_threshold, "unclip": run_unclip}[part]  # fmt: skip
    report_dir = Path(args.report_dir)
    stored = report_dir / "guidance_cascades" / f"{part}.json"
    adding = getattr(args, "add", False)  # only the cascade part has --add
    if adding and stored.is_file():  # refuse before measuring, not after
        _check_settings_match(stored, _settings(args, *CASCADE_SETTINGS))
    result, seconds = _timed(runner, args)
    result.update(command=shlex.join(["python", *sys.argv]), machine=machine(),
                  date=datetime.date.today().isoformat(), minutes=seconds / 60)  # fmt: skip
    if adding and stored.is_file():
        # read again now: another --add call may have stored its rows while this one ran
        result = with_stored_rows(result, json.loads(stored.read_text()))
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(result, indent=1))
    return write_report(report_dir)


def _check_settings_match(stored: Path, settings: dict) -> None:
    before = json.loads(stored.read_text())["settings"]
    if before != settings:
        raise SystemExit(
            f"--add: {stored} was measured with other settings ({before}; this call: "
            f"{settings}); rerun with the same options, or without --add to start over"
        )


def with_stored_rows(result: dict, stored: dict) -> dict:
    """The cascade part's ``result`` plus the stored rows it did not measure again
    (``--add``): models that finish training at different times are measured in several calls,
    each kept in ``commands``."""

    def key(row: dict) -> tuple:
        return row["model"], row["folder"], row["aug_timestep"]

    measured = {key(r) for r in result["rows"]}
    kept = [r for r in stored["rows"] if key(r) not in measured]
    commands = [*stored.get("commands", [stored["command"]]), result["command"]]
    return {**result, "rows": kept + result["rows"], "commands": commands,
            "minutes": stored["minutes"] + result["minutes"]}  # fmt: skip


# --------------------------------------------------------------------------- smoke


def build_tiny_models(folder: Path) -> dict[str, str]:
    """Random-weight models for every part (16 px; 8 -> 16 px cascade); returns their paths."""
    from difflab.data.real import DIGIT_WORDS
    from difflab.models.clip import CLIPConfig, ShapesCLIP, save_clip_model
    from difflab.models.feature_nets import FeatureNet, FeatureNetConfig, save_feature_network
    from difflab.models.networks import embedding_prior, pixel_unet, text_conditional_unet
    from difflab.models.text_encoder import PromptEncoder
    from difflab.pipelines.cascade import CascadePipeline, SuperResolutionPipeline
    from difflab.pipelines.pixel import PixelPipeline
    from difflab.pipelines.text_to_image import TextToImagePipeline
    from difflab.pipelines.unclip import UnCLIPPipeline
    from difflab.recipes.features import DIGITS_HEADS, shapes_heads
    from difflab.schedules import make_schedule

    torch.manual_seed(0)
    schedule, encoder = make_schedule("linear"), PromptEncoder.from_pretrained()
    small = dict(block_out_channels=(8, 16), norm_num_groups=8)
    unet = dict(**small, attention_head_dim=4, attention_levels=(False, True))
    paths = {name: str(folder / name) for name in (
        "uncond", "classifier", "digits", "digits-classifier", "text", "cascade", "unclip",
        "clip")}  # fmt: skip
    PixelPipeline(pixel_unet(16, 3, **small), schedule).save_pretrained(paths["uncond"])
    PixelPipeline(pixel_unet(16, 1, num_class_embeds=11, **small), schedule,
                  list(DIGIT_WORDS)).save_pretrained(paths["digits"])  # fmt: skip
    for name, heads, channels in (("classifier", shapes_heads(), 3),
                                  ("digits-classifier", DIGITS_HEADS, 1)):  # fmt: skip
        config = FeatureNetConfig(in_channels=channels, image_size=16, channels=(8, 8),
                                  layers_per_block=1, norm_groups=4, heads=heads,
                                  noise_aware=True)  # fmt: skip
        save_feature_network(FeatureNet(config), paths[name])
    text = TextToImagePipeline(text_conditional_unet(16, 3, **unet), None, encoder, schedule)
    text.save_pretrained(paths["text"], include_text_encoder=False)
    base = TextToImagePipeline(text_conditional_unet(8, 3, **unet), None, encoder, schedule)
    stage = SuperResolutionPipeline(
        text_conditional_unet(16, 6, out_channels=3, class_embed_type="timestep", **unet),
        encoder, schedule, low_res_size=8,
    )  # fmt: skip
    CascadePipeline(base, [stage]).save_pretrained(paths["cascade"])
    clip = ShapesCLIP(CLIPConfig(image_size=16, channels=(8, 8), layers_per_block=1,
                                 norm_groups=4, grid=2, embed_dim=16, text_hidden=32,
                                 noise_aware=True), encoder)  # fmt: skip
    save_clip_model(clip, paths["clip"])
    decoder = text_conditional_unet(16, 3, cross_attention_dim=16, image_embedding_dim=16, **unet)
    UnCLIPPipeline(decoder, None, schedule, clip, embedding_prior(16, 1, 2, 8),
                   make_schedule("cosine", prediction_type="sample")).save_pretrained(
        paths["unclip"])  # fmt: skip
    return paths


def smoke(args) -> Path:
    """Every part on tiny random-weight models with minimal counts (the test suite's check)."""
    report_dir = Path(args.report_dir)
    paths = build_tiny_models(report_dir / "models")
    common = ["--report-dir", str(report_dir), "--steps", "2", "--sampler", "ddim",
              "--suite-limit", "2", "--fid-images", "0", "--batch-size", "4"]  # fmt: skip
    runs = {
        "classifier": ["--uncond", paths["uncond"], "--classifier", paths["classifier"],
                       "--cfg-model", paths["text"], "--digits", paths["digits"],
                       "--clip", paths["clip"], "--clip-scales", "1",
                       "--digits-classifier", paths["digits-classifier"], "--scales", "0", "2",
                       "--cfg-weights", "1", "3", "--targets", "1", "--images-per-target", "2",
                       "--digit-classes", "2"],
        "cascade": ["--cascade", paths["cascade"], "--single", paths["text"],
                    "--aug-levels", "0", "100"],
        "threshold": ["--model", paths["text"], "--weights", "1", "20"],
        "unclip": ["--unclip", paths["unclip"], "--variation-sources", "2", "--variations", "2"],
    }  # fmt: skip
    path = None
    for part, extra in runs.items():
        path = run_part(parse_args([part, *common, *extra]), part)
    return path


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    parsers = {name: sub.add_parser(name) for name in (*PARTS, "report", "smoke")}
    for name, p in parsers.items():
        p.add_argument("--report-dir", default=str(ROOT / "docs" / "reports"))
        if name in ("report", "smoke"):
            continue
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--sampler", default="dpmpp_2m")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--images-per-prompt", type=int, default=1)
        p.add_argument("--suite-limit", type=int, default=0, help="first N suite prompts; 0 = all")
        p.add_argument("--fid-images", type=int, default=1000, help="0 skips FID")
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--features", default="shapes-features")
    for name in ("classifier", "cascade"):
        parsers[name].add_argument(
            "--x0-clip", choices=THRESHOLD_MODES, default="static",
            help="thresholding of the implied x0 in pixel-space sampling (default: static, "
            "DDPM's clipping to [-1, 1]); the threshold part compares all three",
        )  # fmt: skip
    c = parsers["classifier"]
    c.add_argument("--uncond", help="unconditional pixel shapes model (shapes-uncond)")
    c.add_argument("--classifier", default="shapes-classifier")
    c.add_argument("--cfg-model", help="text-conditional pixel model for the CFG comparison")
    c.add_argument("--clip", help="noise-aware CLIP model: also CLIP-guide the uncond model")
    c.add_argument("--clip-scales", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    c.add_argument("--digits", help="the class-conditional digits model")
    c.add_argument("--digits-classifier", default="digits-classifier")
    c.add_argument("--digits-features", default="digits-features")
    c.add_argument("--scales", type=float, nargs="+", default=list(CLASSIFIER_SCALES))
    c.add_argument("--cfg-weights", type=float, nargs="+", default=list(CFG_WEIGHTS))
    c.add_argument("--targets", type=int, default=len(SHAPES_TARGETS))
    c.add_argument("--images-per-target", type=int, default=32)
    c.add_argument("--digit-classes", type=int, default=10)
    k = parsers["cascade"]
    for flag in ("--cascade", "--single", "--cascade-64"):
        k.add_argument(flag)
    for flag in ("--cascade-runs", "--single-runs", "--cascade-64-runs"):
        k.add_argument(flag, nargs="+", help="run folders whose train_seconds add up")
    k.add_argument("--aug-levels", type=int, nargs="+", default=[0, 100, 250])
    k.add_argument("--guidance", type=float, default=5.0)
    k.add_argument("--add", action="store_true",
                   help="keep the stored rows of models this call does not measure")  # fmt: skip
    t = parsers["threshold"]
    t.add_argument("--model", required=True, help="a pixel-space text-to-image model or cascade")
    t.add_argument("--weights", type=float, nargs="+", default=list(THRESHOLD_WEIGHTS))
    t.add_argument("--percentile", type=float, default=0.995)
    u = parsers["unclip"]
    u.add_argument("--unclip", required=True)
    u.add_argument("--guidance", type=float, default=3.0, help="the decoder's guidance weight")
    u.add_argument("--variation-sources", type=int, default=64)
    u.add_argument("--variations", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.part == "smoke":
        path = smoke(args)
    elif args.part == "report":
        path = write_report(Path(args.report_dir))
    else:
        path = run_part(args, args.part)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
