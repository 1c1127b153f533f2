"""Two architecture claims of the lectures, each trained from scratch side by side and written
as a report with a plot under docs/reports/:

- ``--compare latent-pixel``: latent diffusion against pixel-space diffusion trained for the
  **same wall-clock budget** (Rombach et al. 2022, Sec. 4.1 and Fig. 6-7: LDMs with a moderate
  downsampling factor train and sample several times faster than pixel-space models and reach
  better quality for the same compute). The latent model is the shapes-t2i-small recipe's U-Net on
  the shipped 8x8x8 VAE latents; the pixel model is a 3-level U-Net of the same widths on the
  32x32 images (cross-attention at 16x16 and in the middle block; attention over every pixel at
  32x32 would cost more than everything else together).
- ``--compare unet-dit``: the shapes-t2i-small U-Net against a diffusion transformer (PixArt-style DiT,
  Peebles & Xie 2023) with about the **same parameter count**, trained for the **same number of
  steps and batch** on the same latents (Peebles & Xie, Table 4 and Fig. 2: at equal compute the
  transformer matches or beats the U-Net once it is large enough).

    python benchmarks/architectures.py --compare latent-pixel --budget-minutes 20
    python benchmarks/architectures.py --compare unet-dit --steps 3000

Each model is trained by the text_to_image recipe into ``--runs DIR`` and measured with
difflab.eval.text_to_image (ShapesEval on the default suite, FID and precision/recall against
shapes validation renders, sampling time per image).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_text import write_report_text  # noqa: E402
from sampling_sweeps import TABLE_HEAD, machine, row_cells  # noqa: E402

PIXEL_UNET = {
    "vae": "",
    "block_out_channels": (64, 128, 128),
    "attention_levels": (False, True, False),
}


def matched_dit(options, target: int) -> dict:
    """DiT options (6 heads of 32, as many layers as bring it closest to ``target`` parameters)."""
    from difflab.models.networks import parameter_count
    from difflab.recipes.text_to_image import latent_denoiser

    best = None
    for layers in range(2, 25):
        trial = dataclasses.replace(
            options, denoiser="dit", dit_layers=layers, dit_heads=6, dit_head_dim=32
        )
        count = parameter_count(latent_denoiser(trial, 8, 8))
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (layers, count)
    return {"denoiser": "dit", "dit_layers": best[0], "dit_heads": 6, "dit_head_dim": 32}


def seconds_per_step(options, batch_size: int, latent_channels: int, steps: int = 8) -> float:
    """Wall time of one AdamW update of the recipe's denoiser on a random batch."""
    from difflab.recipes.text_to_image import latent_denoiser

    size = options.image_size if not options.vae else options.image_size // 4
    model = latent_denoiser(options, size, latent_channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, latent_channels, size, size, generator=generator)
    context = torch.randn(batch_size, 32, 384, generator=generator)
    t = torch.randint(0, 1000, (batch_size,), generator=generator)
    from difflab.models.networks import call_denoiser

    for i in range(steps + 2):
        if i == 2:
            began = time.perf_counter()
        loss = call_denoiser(model, x, t, encoder_hidden_states=context).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - began) / steps


def train_variant(name: str, options, config, runs: Path) -> dict:
    from difflab.recipes.text_to_image import run
    from difflab.train import seeded_weights

    out = runs / name
    print(f"training {name}: {config.max_steps} steps of batch {config.batch_size}", flush=True)
    with seeded_weights(config.seed):
        figures = run(options, config, out, resume=(out / "run.json").is_file(), overwrite=False)
    (out / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("latent-pixel", "unet-dit"), required=True)
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="latent-pixel")
    parser.add_argument("--steps", type=int, default=3000, help="unet-dit: steps for both")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--vae", default=None, help="VAE folder; default: the shipped model's")
    parser.add_argument("--fid-images", type=int, default=1000)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "architectures"))
    parser.add_argument("--report-dir", default=str(ROOT / "docs" / "reports"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report (text and plot) from its JSON and the runs' metrics; no training",
    )
    args = parser.parse_args()
    if args.report_only:
        stored = json.loads(report_path(args, ".json").read_text())
        print(f"wrote {write_report(args, stored)}")
        return

    from difflab.eval.shapes import load_suite
    from difflab.eval.text_to_image import Reference, evaluate_text_to_image
    from difflab.recipes import load_recipe
    from difflab.zoo import load_pipeline, resolve_model

    began = time.perf_counter()
    _, base, config, _ = load_recipe("shapes-t2i-small")
    vae = args.vae or str(resolve_model("shapes-t2i-small") / "vae")
    base = dataclasses.replace(base, vae=vae)
    config = dataclasses.replace(
        config, batch_size=args.batch_size, sample_every=0, checkpoint_every=500, warmup_steps=100
    )
    if args.compare == "latent-pixel":
        variants = {"latent-unet": {}, "pixel-unet": PIXEL_UNET}
        steps = {}
        for name, changes in variants.items():
            options = dataclasses.replace(base, **changes)
            per_step = seconds_per_step(options, args.batch_size, 3 if not options.vae else 8)
            steps[name] = max(10, int(args.budget_minutes * 60 / per_step))
            print(f"{name}: {per_step:.3f} s/step -> {steps[name]} steps", flush=True)
    else:
        from difflab.models.networks import parameter_count
        from difflab.recipes.text_to_image import latent_denoiser

        unet_params = parameter_count(latent_denoiser(base, 8, 8))
        variants = {"unet": {}, "dit": matched_dit(base, unet_params)}
        steps = dict.fromkeys(variants, args.steps)

    reference = Reference.shapes(args.fid_images)
    suite = load_suite()
    results = []
    for name, changes in variants.items():
        options = dataclasses.replace(base, **changes)
        run_config = dataclasses.replace(config, max_steps=steps[name])
        figures = train_variant(name, options, run_config, Path(args.runs))
        pipeline = load_pipeline(figures["pipeline"])
        measured = evaluate_text_to_image(pipeline, suite=suite, reference=reference)
        # The Trainer's rate of this call's updates is right for a resumed run too; the time
        # the whole run takes at that rate stands in for its (possibly split) wall time.
        rate = figures["train_images_per_second"]
        train_seconds = figures["steps"] * args.batch_size / rate
        results.append(
            {
                "name": name,
                "options": {k: v for k, v in dataclasses.asdict(options).items() if k in changes},
                "parameters": figures["parameters"],
                "steps": figures["steps"],
                "train_seconds": train_seconds,
                "train_images_per_second": rate,
                "sampler": "dpmpp_2m, 20 steps, guidance 5",
                **measured,
            }
        )
        print(json.dumps(results[-1], indent=1), flush=True)
    stored = {
        "command": f"python {shlex.join(sys.argv)}",
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "seconds": time.perf_counter() - began,
        "budget_minutes": args.budget_minutes,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "fid_images": args.fid_images,
        "runs": args.runs,
        "results": results,
    }
    report_path(args, ".json").write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {write_report(args, stored)}")


def report_path(args, suffix: str) -> Path:
    name = {"latent-pixel": "latent_vs_pixel", "unet-dit": "unet_vs_dit"}[args.compare]
    return Path(args.report_dir) / f"{name}{suffix}"


def loss_curve(run: Path, window: int = 20) -> tuple[list[int], list[float]]:
    """(steps, training loss averaged over the last ``window`` logged points) from a run's
    metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["loss"] for r in rows]
    smooth = []
    for i in range(len(losses)):
        recent = losses[max(0, i - window + 1) : i + 1]
        smooth.append(sum(recent) / len(recent))
    return [r["step"] for r in rows], smooth


def write_report(args, stored: dict) -> Path:
    """The markdown report and its plot from the stored figures (``stored``: what main wrote to
    the report's JSON); for unet-dit the plot adds both runs' training-loss curves, read from
    their metrics.jsonl under ``stored["runs"]`` (same objective, data order and seeds, so the
    curves compare)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = stored["results"]
    name = report_path(args, "").name
    out_dir = Path(args.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = Path(stored["runs"])
    curves = args.compare == "unet-dit" and all(
        (runs / r["name"] / "metrics.jsonl").is_file() for r in results
    )
    fig, axes = plt.subplots(1, 4 if curves else 3, figsize=(16 if curves else 12, 3.5))
    labels = [r["name"] for r in results]
    for ax, key, title in (
        (axes[0], lambda r: r["shapes"]["overall"], "ShapesEval overall"),
        (axes[1], lambda r: r["fid"], "FID (lower is better)"),
        (axes[2], lambda r: r["train_images_per_second"], "training images/s"),
    ):
        ax.bar(labels, [key(r) for r in results], color=["tab:blue", "tab:orange"])
        ax.set_title(title)
    final_loss = {}
    if curves:
        for r, colour in zip(results, ("tab:blue", "tab:orange"), strict=True):
            steps, smooth = loss_curve(runs / r["name"])
            axes[3].plot(steps, smooth, color=colour, label=r["name"])
            final_loss[r["name"]] = smooth[-1]
        axes[3].set_yscale("log")
        axes[3].set_xlabel("step")
        axes[3].set_title("training loss (min-SNR weighted, smoothed)")
        axes[3].legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=120)

    a, b = results
    budget = (
        f"the same wall-clock budget ({stored['budget_minutes']:g} min of training each)"
        if args.compare == "latent-pixel"
        else f"the same budget ({stored['steps']} steps of batch {stored['batch_size']} each)"
    )
    lines = [
        f"# {'Latent vs pixel diffusion' if args.compare == 'latent-pixel' else 'U-Net vs DiT'}",
        "",
        f"Command: `{stored['command']}`  ",
        f"Machine: {stored['machine']}  ",
        f"Date: {stored['date']}; total time {stored['seconds'] / 60:.1f} min.",
        "",
        f"Both models are trained from scratch by the text_to_image recipe (shapes-t2i-small's "
        f"settings) for {budget}, then sampled with DPM-Solver++(2M), 20 steps, guidance 5. "
        f"ShapesEval: default suite, 1 image per prompt; FID and precision/recall (k = 3): "
        f"{stored['fid_images']} images against as many shapes validation renders on "
        "shapes-features. train img/s is the Trainer's measured rate of updates (data loading "
        "and EMA included); train min is steps x batch at that rate, which stays right when a "
        "run was resumed.",
        "",
        f"![{name}]({name}.png)",
        "",
        "| model | parameters | steps | train min | train img/s " + TABLE_HEAD,
        "|---|---:|---:|---:|---:" + "|---:" * (len(TABLE_HEAD.split("|")) - 2) + "|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['parameters']:,} | {r['steps']} | {r['train_seconds'] / 60:.1f} "
            f"| {r['train_images_per_second']:.0f} | {row_cells(r)}"
        )
    lines += [
        "",
        "## What the figures say",
        "",
        f"- Training throughput: {a['name']} {a['train_images_per_second']:.0f} images/s, "
        f"{b['name']} {b['train_images_per_second']:.0f} "
        f"({a['train_images_per_second'] / b['train_images_per_second']:.2f}x).",
        f"- Sampling: {a['name']} {a['seconds_per_image'] * 1000:.1f} ms/image, {b['name']} "
        f"{b['seconds_per_image'] * 1000:.1f} ms/image "
        f"({b['seconds_per_image'] / a['seconds_per_image']:.2f}x).",
        f"- Quality: ShapesEval {a['shapes']['overall']:.3f} vs {b['shapes']['overall']:.3f}; "
        f"FID {a['fid']:.2f} vs {b['fid']:.2f}; KID x 1000 {a['kid'] * 1000:.1f} vs "
        f"{b['kid'] * 1000:.1f}.",
    ]
    if final_loss:
        lines.append(
            f"- Training loss at the end (smoothed): {a['name']} {final_loss[a['name']]:.4f}, "
            f"{b['name']} {final_loss[b['name']]:.4f}."
        )
    return write_report_text(out_dir / f"{name}.md", lines)


if __name__ == "__main__":
    main()
