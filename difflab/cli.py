"""The ``difflab`` command line (typer).

Each command is a thin shell over a library function; the heavy imports happen inside the
commands so that ``difflab --help`` stays instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="difflab: diffusion models and friends, trained and measured on a laptop CPU.",
    no_args_is_help=True,
    add_completion=False,
)
eval_app = typer.Typer(help="Measure images or models (ShapesEval, FID, ...).", no_args_is_help=True)
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


# ---- commands of other areas register below (shapes world, evaluation, generation) ----


@eval_app.command("shapes")
def eval_shapes(
    images: str = typer.Option(..., "--images", help="Folder of images: one sub-folder per prompt line (00000/, 00001/, ...) and/or a metadata.jsonl."),
    prompts: str | None = typer.Option(None, "--prompts", help="ShapesEval suite (jsonl); default: the shipped suite."),
    out: str | None = typer.Option(None, "--out", help="Where to write the JSON report."),
) -> None:
    """Score images with ShapesEval (GenEval's six tasks on the shapes world) and print the table."""
    from tqdm import tqdm

    from difflab.eval.shapes import format_report_table, score_folder

    try:
        report = score_folder(images, prompts, out, progress=lambda pairs: tqdm(pairs, desc="ShapesEval", unit="image"))
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report_table(report))
    if out is not None:
        typer.echo(f"report written to {out}")


shapes_app = typer.Typer(help="The shapes world: render scenes and ShapesEval ground truth.", no_args_is_help=True)
app.add_typer(shapes_app, name="shapes")


@shapes_app.command("render")
def shapes_render(
    out: str = typer.Option(..., "--out", help="Folder to write PNGs and metadata.jsonl (image + captions + scene) into."),
    count: int = typer.Option(16, "--count", "-n", help="Number of scenes."),
    size: int = typer.Option(32, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scene draws."),
    split: str = typer.Option("train", "--split", help="train or validation."),
) -> None:
    """Render random scenes with their captions (an imagefolder with metadata.jsonl)."""
    import json
    from pathlib import Path

    from difflab.data.shapes import captions, render, sample_scene, save_png, scene_rng

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for i in range(count):
            rng = scene_rng(seed, split, i)
            scene = sample_scene(rng)
            texts = captions(scene, rng, 3)
            name = f"{i:05d}.png"
            row = {"file_name": name, "text": texts[0], "captions": texts, "scene": scene.to_dict(), "seed": seed, "split": split, "index": i}
            save_png(render(scene, size), folder / name, row)
            metadata.write(json.dumps(row) + "\n")
    typer.echo(f"wrote {count} scenes to {out}")


@shapes_app.command("suite")
def shapes_suite(
    out: str = typer.Option(..., "--out", help="Folder for ground-truth renders, one sub-folder per prompt line."),
    prompts: str | None = typer.Option(None, "--prompts", help="ShapesEval suite (jsonl); default: the shipped suite."),
    images_per_prompt: int = typer.Option(1, "--images-per-prompt"),
    size: int = typer.Option(32, "--size"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Render ground-truth images of a ShapesEval suite in the layout `difflab eval shapes` reads."""
    from difflab.eval.shapes import render_suite_folder

    written = render_suite_folder(out, prompts, images_per_prompt, size, seed)
    typer.echo(f"wrote {written} images to {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()
