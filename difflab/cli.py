"""The ``difflab`` command line (typer).

Each command is a thin shell over a library function; the heavy imports happen inside the
commands so that ``difflab --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="difflab: diffusion models and friends, trained and measured on a laptop CPU.",
    no_args_is_help=True,
    add_completion=False,
)
eval_app = typer.Typer(
    help="Measure images or models (ShapesEval, FID, ...).", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@app.command()
def version() -> None:
    """Print the difflab version."""
    from difflab import __version__

    typer.echo(__version__)


@app.command()
def oracle(
    sampler: list[str] = typer.Option(
        None, "--sampler", "-s", help="Sampler(s) to run; default: all of them."
    ),
    steps: list[int] = typer.Option(
        None, "--steps", help="Step counts to try; default: 5 10 20 50 200."
    ),
    dim: int = typer.Option(2, help="Data dimension of the Gaussian mixture (2 or 16)."),
    num_samples: int = typer.Option(4000, help="Samples per (sampler, steps) cell."),
    seed: int = typer.Option(0, help="Seed of the sampling noise."),
) -> None:
    """Sample an analytic Gaussian mixture with exact denoisers and print each sampler's error.

    No training and no weights: the denoiser is the closed-form optimum, so the printed error is
    the sampler's own discretisation error plus Monte-Carlo noise.
    """
    from difflab.oracle import run_oracle_table

    run_oracle_table(
        samplers=sampler or None,
        steps=steps or None,
        dim=dim,
        num_samples=num_samples,
        seed=seed,
        echo=typer.echo,
    )


_INTERVAL_HELP = (
    "Classifier-free guidance only at timesteps LOW..HIGH, e.g. 0,800 (Kynkaanniemi et al. "
    "2024), or 'all' (every step); default: the model's own (shapes-t2i: 0,800), else all."
)


def _guidance_interval(text: str | None) -> list[int] | str | None:
    from difflab.guidance import parse_guidance_interval

    try:
        return parse_guidance_interval(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def generate(
    prompts: list[str] = typer.Argument(
        None,
        help="One or more prompts (a class-conditional pixel model takes class names; an "
        "unconditional one none, or the text of --clip-guidance).",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Shipped model name or folder; default shapes-t2i (with --lora: the adapter's "
        "teacher).",
    ),
    lora: str = typer.Option(
        None,
        "--lora",
        help="Attach an LCM-LoRA adapter (shipped name or folder) to the model; it samples with "
        "the adapter's defaults (the lcm sampler, 4 steps, guidance 1), e.g. --lora "
        "shapes-t2i-lcm-lora.",
    ),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images per prompt."),
    steps: int = typer.Option(
        None, help="Sampler steps; default: the model's own (4 for the distilled ones), else 20."
    ),
    sampler: str = typer.Option(
        None,
        help="ddpm, ddim, euler, heun, dpmpp_2m, sde or lcm; default: the model's own "
        "(lcm for a latent consistency model, else dpmpp_2m).",
    ),
    guidance: float = typer.Option(
        None, help="Classifier-free guidance weight (1 = off); default: the model's own, else 5."
    ),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    out: Path = typer.Option(
        Path("outputs"),
        help="Folder for the PNGs and grid.png; files already there are kept (numbering goes on "
        "from the highest, the grid becomes grid-1.png, ...).",
    ),
    from_png: Path = typer.Option(
        None, "--from-png", help="Reproduce a PNG written by this command, bit for bit."
    ),
    classifier_guidance: str = typer.Option(
        None,
        "--classifier-guidance",
        help="Classifier guidance (pixel models) toward a noise-aware classifier's labels, e.g. "
        "'colour=red,shape=circle' or 'digit=seven' (Dhariwal & Nichol 2021).",
    ),
    clip_guidance: bool = typer.Option(
        False, "--clip-guidance", help="CLIP guidance (pixel models) toward the prompt (GLIDE)."
    ),
    guidance_model: str = typer.Option(
        None,
        "--guidance-model",
        help="The noise-aware classifier or CLIP model (name or folder); default "
        "shapes-classifier (digits-classifier for grey models) or shapes-clip.",
    ),
    scale: float = typer.Option(3.0, "--scale", help="Classifier / CLIP guidance scale s."),
    threshold: str = typer.Option(
        None,
        "--threshold",
        help="Threshold the implied x0 at every step (pixel models): static, dynamic (Imagen) "
        "or none; default: the model's (static for pixel folders that set clip_sample).",
    ),
    threshold_percentile: float = typer.Option(
        0.995, help="Dynamic thresholding's percentile of |x0|."
    ),
    guidance_interval: str = typer.Option(None, "--guidance-interval", help=_INTERVAL_HELP),
) -> None:
    """Generate images from text (or class names, or nothing for an unconditional model); each
    PNG carries its settings in PNG text chunks."""
    from difflab.generate import (
        GenerationSettings,
        complete_settings,
        generate_images,
        settings_from_png,
        takes_no_prompt,
        write_outputs,
    )
    from difflab.guidance import THRESHOLDS
    from difflab.samplers import get_sampler
    from difflab.zoo import DEFAULT_MODEL, load_pipeline, lora_teacher

    if from_png is not None:
        if prompts:
            raise typer.BadParameter("give either prompts or --from-png, not both.")
        settings = [settings_from_png(from_png)]
    else:
        model = model or (lora and lora_teacher(lora)) or DEFAULT_MODEL
        if not prompts:
            if not (classifier_guidance or takes_no_prompt(model)):
                raise typer.BadParameter("give at least one prompt, or --from-png FILE.")
            prompts = [""]
        if num_images < 1:
            raise typer.BadParameter("--num-images must be at least 1.")
        if steps is not None and steps < 1:
            raise typer.BadParameter("--steps must be at least 1.")
        if sampler is not None:
            get_sampler(sampler)  # a clear error before any loading
        if threshold is not None and threshold not in (*THRESHOLDS, "none"):
            raise typer.BadParameter(f"--threshold must be one of {', '.join(THRESHOLDS)} or none.")
        interval = _guidance_interval(guidance_interval)
        steering = dict(
            classifier_guidance=classifier_guidance or "", clip_guidance=clip_guidance,
            guidance_model=guidance_model or "",
            scale=scale if classifier_guidance or clip_guidance else 0.0,
            threshold=threshold, threshold_percentile=threshold_percentile, lora=lora or "",
            guidance_interval=interval,
        )  # fmt: skip
        settings = [
            GenerationSettings(p, model, sampler, steps, guidance, seed + i, **steering)
            for p in prompts
            for i in range(num_images)
        ]
    pipeline = load_pipeline(settings[0].model, lora=settings[0].lora or None)
    settings = complete_settings(pipeline, settings)
    images = generate_images(pipeline, settings)
    for path in write_outputs(images, settings, out):
        typer.echo(path)


@app.command()
def variations(
    images: list[Path] = typer.Argument(..., help="Image files to vary (resized to the model's)."),
    model: str = typer.Option(..., "--model", "-m", help="unCLIP model name or folder."),
    num_images: int = typer.Option(4, "--num-images", "-n", help="Variations per image."),
    steps: int = typer.Option(20, help="Decoder sampler steps."),
    sampler: str = typer.Option(None, help="Decoder sampler; default: the model's."),
    guidance: float = typer.Option(None, help="Decoder guidance weight; default: the model's."),
    seed: int = typer.Option(0, help="Seed of the first variation; variation k uses seed + k."),
    out: Path = typer.Option(
        Path("outputs"), help="Folder for the PNGs and grid.png (files already there are kept)."
    ),
) -> None:
    """unCLIP image variations (DALL-E 2, Fig. 3): each image's CLIP image embedding, decoded
    from new seeds."""
    from difflab.generate import write_variations
    from difflab.zoo import load_pipeline

    for path in write_variations(
        load_pipeline(model), model, images, num_images, out, steps=steps, guidance=guidance,
        sampler=sampler, seed=seed,
    ):  # fmt: skip
        typer.echo(path)


@app.command()
def interpolate(
    image_a: Path = typer.Argument(..., help="The first image file."),
    image_b: Path = typer.Argument(..., help="The second image file."),
    model: str = typer.Option(..., "--model", "-m", help="unCLIP model name or folder."),
    points: int = typer.Option(5, help="Decoded points from image_a to image_b (ends included)."),
    steps: int = typer.Option(20, help="Decoder sampler steps."),
    sampler: str = typer.Option(None, help="Decoder sampler; default: the model's."),
    guidance: float = typer.Option(None, help="Decoder guidance weight; default: the model's."),
    seed: int = typer.Option(0, help="The decoder seed, the same for every point."),
    out: Path = typer.Option(
        Path("outputs"), help="Folder for the PNGs and grid.png (files already there are kept)."
    ),
) -> None:
    """unCLIP interpolation (DALL-E 2, Fig. 4): decode slerp(z_a, z_b, theta) of the two images'
    CLIP image embeddings with the decoder seed fixed."""
    from difflab.generate import write_interpolation
    from difflab.zoo import load_pipeline

    for path in write_interpolation(
        load_pipeline(model), model, image_a, image_b, points, out, steps=steps,
        guidance=guidance, sampler=sampler, seed=seed,
    ):  # fmt: skip
        typer.echo(path)


@app.command()
def models() -> None:
    """List the shipped models, LoRA adapters, feature networks and CLIP models, with their
    folders."""
    from difflab.zoo import list_clip_models, list_feature_networks, list_loras, list_models

    found = list_models()
    if not found:
        typer.echo("no shipped models in this installation")
    for name, folder in found.items():
        typer.echo(f"{name}\t{folder}")
    adapters = list_loras()
    if adapters:
        typer.echo("LoRA adapters (for difflab generate --lora):")
    for name, folder in adapters.items():
        typer.echo(f"{name}\t{folder}")
    networks = list_feature_networks()
    if networks:
        typer.echo("feature networks (for difflab eval fid|kid|prd --features):")
    for name, folder in networks.items():
        typer.echo(f"{name}\t{folder}")
    clip_models = list_clip_models()
    if clip_models:
        typer.echo("CLIP models (for difflab eval clip --clip):")
    for name, folder in clip_models.items():
        typer.echo(f"{name}\t{folder}")


@app.command()
def export(
    model: str = typer.Argument(..., help="Shipped model name or folder."),
    out: Path = typer.Argument(..., help="New folder for the complete diffusers pipeline."),
) -> None:
    """Write a complete diffusers folder (text encoder included) that plain diffusers loads."""
    from difflab.zoo import load_pipeline

    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} exists and is not empty; choose a new folder.")
    load_pipeline(model).save_pretrained(out, include_text_encoder=True)
    typer.echo(f"wrote {out}")


@app.command("train")
def train_command(
    recipe: str = typer.Argument(..., help="Shipped recipe name (see --list) or a .toml file."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder."),
    max_steps: int = typer.Option(None, help="Override the recipe's max_steps."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace an earlier run in --out."),
) -> None:
    """Train a recipe (the VAE, the text-to-image model, ...) with the accelerate Trainer."""
    import json

    from difflab.recipes import run_recipe

    overrides = {"max_steps": max_steps} if max_steps is not None else {}
    figures = run_recipe(recipe, out, resume=resume, overwrite=overwrite, **overrides)
    typer.echo(json.dumps(figures, indent=2))


@app.command()
def recipes(
    show: str = typer.Option(
        None, help="Print this recipe (a name or .toml file) in full, `extends` resolved."
    ),
) -> None:
    """List the shipped training recipes, or print one with --show (checked as `difflab train`
    checks it: an unknown key or a wrong type is an error, not printed as if it were read)."""
    from difflab.recipes import load_recipe
    from difflab.recipes.config import list_recipes, read_recipe_file, recipe_as_toml, recipe_path

    if show is not None:
        path = recipe_path(show)
        load_recipe(path)
        typer.echo(f"# {path}, every key resolved\n" + recipe_as_toml(read_recipe_file(path)))
        return
    for name, path in list_recipes().items():
        typer.echo(f"{name}\t{path}")


# ---- commands of other areas register below (shapes world, evaluation, generation) ----


@eval_app.command("shapes")
def eval_shapes(
    images: str | None = typer.Option(
        None,
        "--images",
        help="Folder of images: one sub-folder per prompt line (00000/, 00001/, ...) and/or a "
        "metadata.jsonl. With --model, generated images are written here (default: beside --out).",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Generate the suite with this model (name or folder) first."
    ),
    lora: str | None = typer.Option(
        None,
        "--lora",
        help="Generate with this LCM-LoRA adapter (name or folder) attached to --model (default: "
        "the adapter's teacher), at its sampler, guidance and steps unless given.",
    ),
    prompts: str | None = typer.Option(
        None, "--prompts", help="ShapesEval suite (jsonl); default: the shipped suite."
    ),
    out: str | None = typer.Option(None, "--out", help="Where to write the JSON report."),
    images_per_prompt: int = typer.Option(4, help="With --model: images per prompt."),
    steps: int = typer.Option(None, help="With --model: sampler steps (default: the model's)."),
    sampler: str = typer.Option(None, help="With --model: the sampler (default: the model's)."),
    guidance: float = typer.Option(
        None, help="With --model: classifier-free guidance weight (default: the model's)."
    ),
    seed: int = typer.Option(0, help="With --model: seed of the first image."),
    guidance_interval: str = typer.Option(
        None, "--guidance-interval", help="With --model: " + _INTERVAL_HELP
    ),
) -> None:
    """Score images with ShapesEval (GenEval's six tasks on the shapes world) and print the table;
    with --model, generate the suite's images first."""
    from tqdm import tqdm

    from difflab.eval.shapes import format_report_table, load_suite, score_folder

    if images is None and model is None and lora is None:
        raise typer.BadParameter(
            "give --images DIR to score, or --model NAME to generate and score."
        )
    if images_per_prompt < 1:
        raise typer.BadParameter("--images-per-prompt must be at least 1.")
    try:
        if lora is not None and model is None:
            from difflab.zoo import DEFAULT_MODEL, lora_teacher

            model = lora_teacher(lora) or DEFAULT_MODEL
        if model is not None:
            from difflab.generate import generate_suite_folder, model_sampling
            from difflab.pipelines.text_to_image import resolved_guidance_interval
            from difflab.samplers import get_sampler
            from difflab.storage import require_empty_folder
            from difflab.zoo import load_pipeline

            if sampler is not None:
                get_sampler(sampler)
            interval = _guidance_interval(guidance_interval)
            if images is None:
                images = str(Path(out).with_suffix("") if out else Path("shapes-eval")) + "-images"
            require_empty_folder(images, "--images")
            pipeline = load_pipeline(model, lora=lora)
            sampler, guidance, steps = model_sampling(pipeline, sampler, guidance, steps)
            generate_suite_folder(
                pipeline, images, load_suite(prompts), images_per_prompt, steps, sampler,
                guidance, seed, model_name=model, guidance_interval=interval,
            )  # fmt: skip
        report = score_folder(
            images,
            prompts,
            out,
            progress=lambda pairs: tqdm(pairs, desc="ShapesEval", unit="image"),
        )
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if model is not None:
        report["generation"] = {
            "model": model, "lora": lora, "images_per_prompt": images_per_prompt, "steps": steps,
            "sampler": sampler, "guidance": guidance, "seed": seed,
            "guidance_interval": resolved_guidance_interval(pipeline, interval),
        }  # fmt: skip
        if out is not None:
            import json

            Path(out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    typer.echo(format_report_table(report))
    if out is not None:
        typer.echo(f"report written to {out}")


# ---- FID / KID / precision-recall (difflab.eval.distribution) ----

_MODEL = typer.Option(
    None, "--model", "-m", help="Generate the evaluated images with this model (name or folder)."
)
_IMAGES = typer.Option(None, "--images", help="Evaluate the images of this folder instead.")
_REFERENCE = typer.Option(
    ...,
    "--reference",
    "-r",
    help="Real images to compare with: shapes (validation renders), digits (the 180 validation "
    "digits), digits-train (the 1,617 training digits) or a folder of images.",
)
_FEATURES = typer.Option(
    None,
    "--features",
    "-f",
    help="Feature network name or folder, or a .safetensors file of the FID Inception-v3 "
    "(docs/metrics.md); default: shapes-features for shapes, digits-features for digits (see "
    "`difflab models`).",
)
_NUM_IMAGES = typer.Option(
    None,
    "--num-images",
    "-n",
    help="Images per set (N); default: as many as both sets hold, at most 1000.",
)
_OUT = typer.Option(..., "--out", "-o", help="Where to write the JSON report.")
_STEPS = typer.Option(20, help="With --model: sampler steps.")
_SAMPLER = typer.Option("dpmpp_2m", help="With --model: the sampler.")
_GUIDANCE = typer.Option(
    None, help="With --model: guidance weight; default 5 (text-to-image), 2 (class-conditional)."
)
_SEED = typer.Option(0, help="With --model: image i uses seed + i.")
_BATCH_SIZE = typer.Option(32, help="Images per batch when generating and extracting features.")
_RESIZE = typer.Option(
    True,
    "--resize/--no-resize",
    help="Resample images of another size to the feature network's (antialiased bilinear).",
)
_SAVE_IMAGES = typer.Option(
    None, "--save-images", help="With --model: also write the generated images as PNGs here."
)


_GUIDANCE_INTERVAL = typer.Option(
    None, "--guidance-interval", help="With --model (text-to-image): " + _INTERVAL_HELP
)


def _distribution_command(metric: str, **options) -> None:
    """Run :func:`difflab.eval.distribution.evaluate_distribution`, print and write the report."""
    from difflab.eval.distribution import evaluate_distribution, write_report

    out = options.pop("out")
    options["guidance_interval"] = _guidance_interval(options["guidance_interval"])
    try:
        if options["model"] is not None:
            from difflab.samplers import get_sampler

            get_sampler(options["sampler"])  # a clear error before any loading
        report = evaluate_distribution(metric, **options)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    write_report(report, out)
    values = ", ".join(f"{k} = {v:.6g}" for k, v in report["values"].items())
    typer.echo(
        f"{values}  (N = {report['num_images']} per set, features {report['features']['name']}, "
        f"D = {report['features']['dim']})"
    )
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report written to {out}")


@eval_app.command("fid")
def eval_fid(
    out: Path = _OUT, reference: str = _REFERENCE, model: str | None = _MODEL,
    images: str | None = _IMAGES, features: str | None = _FEATURES,
    num_images: int | None = _NUM_IMAGES, steps: int = _STEPS, sampler: str = _SAMPLER,
    guidance: float | None = _GUIDANCE, seed: int = _SEED, batch_size: int = _BATCH_SIZE,
    resize: bool = _RESIZE, save_images: str | None = _SAVE_IMAGES,
    guidance_interval: str | None = _GUIDANCE_INTERVAL,
) -> None:  # fmt: skip
    """Fréchet distance (FID, Heusel et al. 2017) between the features of generated or given
    images and real ones, on a difflab feature network. Lower is better; needs N > D."""
    _distribution_command("fid", **locals())


@eval_app.command("kid")
def eval_kid(
    out: Path = _OUT, reference: str = _REFERENCE, model: str | None = _MODEL,
    images: str | None = _IMAGES, features: str | None = _FEATURES,
    num_images: int | None = _NUM_IMAGES,
    kid_subsets: int = typer.Option(100, help="Random subsets averaged (subset size min(1000, N))."),
    steps: int = _STEPS, sampler: str = _SAMPLER, guidance: float | None = _GUIDANCE,
    seed: int = _SEED, batch_size: int = _BATCH_SIZE, resize: bool = _RESIZE,
    save_images: str | None = _SAVE_IMAGES,
    guidance_interval: str | None = _GUIDANCE_INTERVAL,
) -> None:  # fmt: skip
    """Kernel distance (KID, Bińkowski et al. 2018): unbiased MMD² with a cubic kernel, mean and
    std over random subsets. Lower is better; fine for small sets."""
    _distribution_command("kid", **locals())


@eval_app.command("prd")
def eval_prd(
    out: Path = _OUT, reference: str = _REFERENCE, model: str | None = _MODEL,
    images: str | None = _IMAGES, features: str | None = _FEATURES,
    num_images: int | None = _NUM_IMAGES,
    k: int = typer.Option(3, "--k", help="Neighbourhood size of the manifold estimate."),
    steps: int = _STEPS, sampler: str = _SAMPLER, guidance: float | None = _GUIDANCE,
    seed: int = _SEED, batch_size: int = _BATCH_SIZE, resize: bool = _RESIZE,
    save_images: str | None = _SAVE_IMAGES,
    guidance_interval: str | None = _GUIDANCE_INTERVAL,
) -> None:  # fmt: skip
    """Improved precision (realism) and recall (coverage) of Kynkäänniemi et al. 2019, with k = 3
    nearest neighbours. Higher is better."""
    _distribution_command("prd", **locals())


@eval_app.command("clip")
def eval_clip(
    out: Path = _OUT,
    model: str | None = _MODEL,
    images: str | None = typer.Option(
        None,
        "--images",
        help="Score the images of this folder: in the ShapesEval layout (00012/0.png or a "
        "metadata.jsonl) against the suite's prompts, otherwise image i (sorted) against the "
        "caption of shapes validation scene i (as `eval fid --save-images` writes them).",
    ),
    prompts: str | None = typer.Option(
        None,
        "--prompts",
        help="A ShapesEval suite (jsonl), or 'default' for the shipped one. Without it, --model "
        "is prompted with shapes validation captions.",
    ),
    clip: str = typer.Option(
        "shapes-clip", "--clip", help="CLIP model name or folder (see `difflab models`)."
    ),
    num_images: int | None = typer.Option(
        None,
        "--num-images",
        "-n",
        help="Images to score; default: all in the folder, or 1000 generated (validation "
        "captions).",
    ),
    images_per_prompt: int = typer.Option(1, help="With --model and --prompts: images each."),
    steps: int = _STEPS, sampler: str = _SAMPLER, guidance: float | None = _GUIDANCE,
    seed: int = _SEED, batch_size: int = _BATCH_SIZE,
    resize: bool = typer.Option(
        True, "--resize/--no-resize",
        help="Resample images of another size to the CLIP model's (antialiased bilinear).",
    ),
    save_images: str | None = _SAVE_IMAGES,
) -> None:  # fmt: skip
    """CLIP-T score of generated or given images against their prompts on a difflab CLIP model:
    mean cosine, 100 x mean(max(cos, 0)), and CLIPScore = 2.5 max(cos, 0) (Hessel et al. 2021)."""
    options = dict(locals())
    options.pop("out")
    from difflab.eval.clip_score import evaluate_clip_score
    from difflab.eval.distribution import write_report

    try:
        if model is not None:
            from difflab.samplers import get_sampler

            get_sampler(sampler)  # a clear error before any loading
        report = evaluate_clip_score(**options)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    write_report(report, out)
    values = ", ".join(f"{k} = {v:.4f}" for k, v in report["values"].items())
    typer.echo(f"{values}  (N = {report['num_images']}, CLIP model {report['clip']['name']})")
    typer.echo(f"report written to {out}")


shapes_app = typer.Typer(
    help="The shapes world: render scenes and ShapesEval ground truth.", no_args_is_help=True
)
app.add_typer(shapes_app, name="shapes")


def _require_new_folder(out: str) -> None:
    """Exit with an error (code 2) if ``out`` already holds files: the renders would replace
    them."""
    from difflab.storage import require_empty_folder

    try:
        require_empty_folder(out, "--out")
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@shapes_app.command("render")
def shapes_render(
    out: str = typer.Option(
        ...,
        "--out",
        help="Folder to write PNGs and metadata.jsonl (image + captions + scene) into.",
    ),
    count: int = typer.Option(16, "--count", "-n", help="Number of scenes."),
    size: int = typer.Option(32, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scene draws."),
    split: str = typer.Option("train", "--split", help="train or validation."),
) -> None:
    """Render random scenes with their captions (an imagefolder with metadata.jsonl)."""
    import json
    from pathlib import Path

    from difflab.data.shapes import captions, render, sample_scene, save_png, scene_rng

    _require_new_folder(out)  # its metadata.jsonl and PNGs would be replaced
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for i in range(count):
            rng = scene_rng(seed, split, i)
            scene = sample_scene(rng)
            texts = captions(scene, rng, 3)
            name = f"{i:05d}.png"
            row = {
                "file_name": name,
                "text": texts[0],
                "captions": texts,
                "scene": scene.to_dict(),
                "seed": seed,
                "split": split,
                "index": i,
            }
            save_png(render(scene, size), folder / name, row)
            metadata.write(json.dumps(row) + "\n")
    typer.echo(f"wrote {count} scenes to {out}")


@shapes_app.command("suite")
def shapes_suite(
    out: str = typer.Option(
        ..., "--out", help="Folder for ground-truth renders, one sub-folder per prompt line."
    ),
    prompts: str | None = typer.Option(
        None, "--prompts", help="ShapesEval suite (jsonl); default: the shipped suite."
    ),
    images_per_prompt: int = typer.Option(1, "--images-per-prompt"),
    size: int = typer.Option(32, "--size"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Render ground-truth images of a ShapesEval suite in the layout `difflab eval shapes` reads."""
    from difflab.eval.shapes import render_suite_folder

    _require_new_folder(out)  # its 00000/0.png, ... would be replaced
    written = render_suite_folder(out, prompts, images_per_prompt, size, seed)
    typer.echo(f"wrote {written} images to {out}")


# What bad input raises in the library: a message that names the problem and the fix, which the
# console entry point prints without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError)


def main() -> None:
    """The console entry point: :data:`app`, with an expected error (:data:`USER_ERRORS`) printed as
    ``error: <message>`` (exit code 2) instead of a traceback; ``DIFFLAB_TRACEBACK=1`` shows the
    traceback too."""
    import os

    try:
        app()
    except USER_ERRORS as error:
        if os.environ.get("DIFFLAB_TRACEBACK", "") not in ("", "0"):
            raise
        typer.echo(f"error: {error}", err=True)
        typer.echo("(DIFFLAB_TRACEBACK=1 shows where it was raised)", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # `python -m difflab.cli` and `accelerate launch -m difflab.cli`
    main()
