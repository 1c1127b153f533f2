"""Two lecture claims measured on a shipped text-to-image model, each written as a report with a
plot under docs/reports/:

- ``--sweep samplers``: ShapesEval overall and FID for ddpm, ddim, euler, heun and dpmpp_2m at
  5-100 steps (and DDPM at 1000), with the wall time per image. The claim (Song et al. 2021,
  DDIM, Table 1): DDIM at ~50 steps matches DDPM at 1000.
- ``--sweep guidance``: ShapesEval (fidelity to the prompt), precision, recall and FID for
  classifier-free guidance weights 0-10. The claim (Ho & Salimans 2022, Fig. 4-5): guidance
  trades diversity (recall) for fidelity.

    python benchmarks/sampling_sweeps.py --sweep samplers [--model shapes-t2i] [--fid-images 1000]
    python benchmarks/sampling_sweeps.py --sweep guidance

Every cell generates the ShapesEval suite (``--images-per-prompt`` each; ``--suite-stride K``
keeps every K-th prompt, which keeps the task mix; ``--suite-seed N`` swaps the shipped suite,
seed 0, for the one :func:`difflab.eval.shapes.build_default_suite` draws from seed N - the
same six tasks in the same numbers, other prompts and layouts - so that a setting can be chosen
on held-out prompts and then measured once on the shipped suite) and, for FID, KID and precision/recall,
``--fid-images`` images prompted with the captions of the shapes validation scenes they are
compared with (difflab.eval.text_to_image).

The report is rewritten after every cell and the cells measured so far are kept in
``<report-dir>/<report>.partial.json``: ``--resume`` skips them (same settings only), so a long
sweep can run over several sittings. The samplers sweep measures its key cells first (DDIM at
50 steps, DDPM at 1000 and 50, DPM-Solver++ at 20).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
from collections import Counter
from pathlib import Path

import torch
from report_text import write_report_text

ROOT = Path(__file__).resolve().parents[1]
SAMPLER_STEPS = {
    "ddpm": (5, 10, 20, 50, 100, 1000),
    "ddim": (5, 10, 20, 50, 100),
    "euler": (5, 10, 20, 50, 100),
    "heun": (5, 10, 20, 50, 100),
    "dpmpp_2m": (5, 10, 20, 50, 100),
}
GUIDANCE_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0)
FIRST_CELLS = (("ddim", 50), ("ddpm", 1000), ("ddpm", 50), ("dpmpp_2m", 20))  # the claim's cells
TASK_SHORT = {
    "single_object": "single", "two_object": "two", "counting": "count", "colors": "colours",
    "position": "position", "color_attr": "attr",
}  # fmt: skip


def machine() -> str:
    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def row_cells(result: dict) -> str:
    tasks = result["shapes"]["tasks"]
    return (
        f"{result['shapes']['overall']:.3f} | "
        + " | ".join(f"{tasks.get(t, float('nan')):.2f}" for t in TASK_SHORT)
        + f" | {result.get('fid', float('nan')):.2f}"
        f" | {1000 * result.get('kid', float('nan')):.2f}"
        f" | {result.get('precision', float('nan')):.3f}"
        f" | {result.get('recall', float('nan')):.3f} | {result['seconds_per_image']:.4f}"
    )


TABLE_HEAD = (
    "| overall | "
    + " | ".join(TASK_SHORT.values())
    + " | FID | KID x 1000 | precision | recall | s/image |"
)


def sweep_settings(args) -> dict:
    """What every cell of one sweep shares; ``--resume`` reuses cells only when these match."""
    keys = ("sweep", "model", "images_per_prompt", "fid_images", "suite_stride", "suite_seed")
    keys += ("seed",)
    fixed = ("guidance",) if args.sweep == "samplers" else ("sampler", "steps", "weights")
    return {key: getattr(args, key) for key in keys + fixed}


def sweep_suite(args) -> list[dict]:
    """The prompts every cell generates: the shipped suite, or the held-out one of
    ``--suite-seed`` (:func:`~difflab.eval.shapes.build_default_suite`), every
    ``--suite-stride``-th entry."""
    from difflab.eval.shapes import build_default_suite, load_suite

    suite = build_default_suite(args.suite_seed) if args.suite_seed else load_suite()
    return suite[:: args.suite_stride]


def suite_name(args) -> str:
    if args.suite_seed:
        return f"the held-out suite of seed {args.suite_seed}, not the shipped one,"
    return "the default suite"


def partial_path(args) -> Path:
    return Path(args.report_dir) / f"{REPORT_NAMES[args.sweep]}.partial.json"


def load_partial(args) -> tuple[list[dict], float]:
    """Cells (and seconds) an earlier, interrupted run of the same sweep measured."""
    path = partial_path(args)
    if not args.resume or not path.is_file():
        return [], 0.0
    saved = json.loads(path.read_text())
    if saved["settings"] != sweep_settings(args):
        raise SystemExit(
            f"--resume: {path} was measured with {saved['settings']}, not "
            f"{sweep_settings(args)}; rerun with those options or delete the file to start over"
        )
    return saved["results"], saved["seconds"]


def run_cells(args, cells: list[dict], done: list[dict], seconds_before: float) -> list[dict]:
    """Measure the cells not in ``done``, rewriting the partial file and the report after each."""
    import time

    from difflab.eval.text_to_image import Reference, evaluate_text_to_image
    from difflab.zoo import load_pipeline

    began = time.perf_counter()
    pipeline = load_pipeline(args.model)
    reference = Reference.shapes(args.fid_images) if args.fid_images else None
    suite = sweep_suite(args)
    results = list(done)
    for cell in cells:
        if any(all(r[k] == v for k, v in cell.items()) for r in results):
            continue
        result = evaluate_text_to_image(
            pipeline, suite=suite, images_per_prompt=args.images_per_prompt,
            reference=reference, batch_size=args.batch_size, seed=args.seed, **cell,
        )  # fmt: skip
        results.append({**cell, **result})
        seconds = seconds_before + time.perf_counter() - began
        partial_path(args).parent.mkdir(parents=True, exist_ok=True)
        partial_path(args).write_text(
            json.dumps({"settings": sweep_settings(args), "seconds": seconds, "results": results})
        )
        write_report(args, results, seconds, len(cells))
        print(
            f"{cell['sampler']:>8} {cell['steps']:>4} steps  w={cell['guidance']:<4g}: "
            f"overall {result['shapes']['overall']:.3f}  FID {result.get('fid', float('nan')):.2f}"
            f"  P {result.get('precision', float('nan')):.3f}"
            f"  R {result.get('recall', float('nan')):.3f}"
            f"  KID {result.get('kid', float('nan')):.4f}"
            f"  {result['seconds_per_image']:.4f} s/image",
            flush=True,
        )
    return results


def plot_samplers(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for sampler in SAMPLER_STEPS:
        rows = [r for r in results if r["sampler"] == sampler]
        if not rows:
            continue
        steps = [r["steps"] for r in rows]
        axes[0].plot(steps, [r["shapes"]["overall"] for r in rows], "o-", label=sampler)
        if "fid" in rows[0]:
            axes[1].plot(steps, [r["fid"] for r in rows], "o-", label=sampler)
    titles = ("ShapesEval overall (higher is better)", "FID (lower is better)")
    for ax, label in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_guidance(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [r["guidance"] for r in results]
    if "fid" not in results[0]:  # --fid-images 0: fidelity only
        fig, ax = plt.subplots(figsize=(5, 3.8))
        ax.plot(weights, [r["shapes"]["overall"] for r in results], "o-")
        ax.set_xlabel("guidance weight w")
        ax.set_title("ShapesEval overall (higher is better)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(weights, [r["shapes"]["overall"] for r in results], "o-", label="ShapesEval")
    axes[0].plot(weights, [r["precision"] for r in results], "s-", label="precision")
    axes[0].plot(weights, [r["recall"] for r in results], "^-", label="recall")
    axes[0].set_xlabel("guidance weight w")
    axes[0].set_title("fidelity vs diversity")
    axes[0].legend()
    axes[1].plot(weights, [r["fid"] for r in results], "o-")
    axes[1].set_xlabel("guidance weight w")
    axes[1].set_title("FID (lower is better)")
    axes[2].plot([r["recall"] for r in results], [r["shapes"]["overall"] for r in results], "o-")
    for r in results:
        axes[2].annotate(f"w={r['guidance']:g}", (r["recall"], r["shapes"]["overall"]))
    axes[2].set_xlabel("recall (diversity)")
    axes[2].set_ylabel("ShapesEval overall (fidelity)")
    axes[2].set_title("the trade-off curve")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def overall_standard_error(result: dict, counts: dict) -> float:
    """Binomial standard error of ShapesEval overall (the unweighted mean of the task scores),
    with ``counts[task]`` images per task: sqrt(sum_t p_t (1 - p_t) / n_t) / tasks."""
    tasks = result["shapes"]["tasks"]
    return math.sqrt(sum(p * (1 - p) / counts[t] for t, p in tasks.items())) / len(tasks)


def difference_and_noise(a: dict, b: dict, counts: dict) -> tuple[float, float]:
    """ShapesEval overall of ``a`` minus ``b``, and 2 standard errors of that difference."""
    se = math.hypot(overall_standard_error(a, counts), overall_standard_error(b, counts))
    return a["shapes"]["overall"] - b["shapes"]["overall"], 2 * se


def samplers_findings(results: list[dict], counts: dict) -> list[str]:
    """What the cells say about the claim, with the verdicts read off the numbers: two
    ShapesEval scores differ only when they are more than 2 standard errors apart."""

    def cell(sampler, steps):
        return next((r for r in results if r["sampler"] == sampler and r["steps"] == steps), None)

    def compare(a: dict, b: dict) -> str:
        diff, noise = difference_and_noise(a, b, counts)
        verdict = (
            "the same within noise" if abs(diff) <= noise else
            ("higher" if diff > 0 else "lower")
        )  # fmt: skip
        return (
            f"ShapesEval {a['shapes']['overall']:.3f} vs {b['shapes']['overall']:.3f} "
            f"(difference {diff:+.3f}, 2 SE = {noise:.3f}: {verdict}), KID x 1000 "
            f"{1000 * a.get('kid', math.nan):.1f} vs {1000 * b.get('kid', math.nan):.1f}"
        )

    lines = []
    ddpm, ddim = cell("ddpm", 1000), cell("ddim", 50)
    if ddpm and ddim:
        lines.append(
            f"- DDIM at 50 steps against DDPM at 1000: {compare(ddim, ddpm)}; DDPM takes "
            f"{ddpm['seconds_per_image'] / ddim['seconds_per_image']:.0f}x the time."
        )
    ddpm50 = cell("ddpm", 50)
    if ddpm and ddpm50:
        gap, noise = difference_and_noise(ddpm, ddpm50, counts)
        lines.append(
            f"- DDPM at 50 steps: ShapesEval {ddpm50['shapes']['overall']:.3f}, KID x 1000 "
            f"{1000 * ddpm50.get('kid', math.nan):.1f} (at 1000: "
            f"{ddpm['shapes']['overall']:.3f}, {1000 * ddpm.get('kid', math.nan):.1f}); "
            + (
                "ancestral sampling gains from the extra steps."
                if gap > noise
                else "20x fewer ancestral steps cost no measurable ShapesEval here."
            )
        )
    for steps in (5, 10):
        rows = [r for r in results if r["steps"] == steps]
        if len(rows) > 1:
            best = max(rows, key=lambda r: r["shapes"]["overall"])
            best_kid = min(rows, key=lambda r: r.get("kid", math.inf))
            lines.append(
                f"- At {steps} steps the best sampler by ShapesEval is {best['sampler']} "
                f"({best['shapes']['overall']:.3f}, 2 SE = "
                f"{2 * overall_standard_error(best, counts):.3f}), by KID "
                f"{best_kid['sampler']} ({1000 * best_kid.get('kid', math.nan):.1f})."
            )
    return lines


def guidance_findings(results: list[dict], counts: dict) -> list[str]:
    if len(results) == 1:  # one --weights value: a measurement of the model, nothing to compare
        (only,) = results
        return [
            f"- One weight measured: ShapesEval overall {only['shapes']['overall']:.3f} at w = "
            f"{only['guidance']:g} (2 SE = {2 * overall_standard_error(only, counts):.3f})."
        ]
    best_shapes = max(results, key=lambda r: r["shapes"]["overall"])
    first, last = results[0], results[-1]
    fidelity = (
        f"- Fidelity: ShapesEval overall goes from {first['shapes']['overall']:.3f} at w = "
        f"{first['guidance']:g} to {last['shapes']['overall']:.3f} at w = {last['guidance']:g}; "
        f"its maximum is {best_shapes['shapes']['overall']:.3f} at w = {best_shapes['guidance']:g}."
    )
    if "fid" not in first:  # --fid-images 0: how far the best weight stands above the others
        lines = [fidelity]
        for r in results:
            if r is not best_shapes:
                gap, noise = difference_and_noise(best_shapes, r, counts)
                verdict = "beyond" if gap > noise else "within"
                lines.append(
                    f"- w = {best_shapes['guidance']:g} against w = {r['guidance']:g}: "
                    f"{gap:+.3f} (2 SE = {noise:.3f}, {verdict} the noise)."
                )
        return lines
    best_fid = min(results, key=lambda r: r["fid"])
    best_recall = max(results, key=lambda r: r["recall"])
    above = [r["recall"] for r in results if r["guidance"] >= best_recall["guidance"]]
    falls = (
        "falls at every step" if all(a > b for a, b in zip(above, above[1:], strict=False))
        else "falls overall (not at every step)"
    )  # fmt: skip
    gain = last["shapes"]["overall"] - best_recall["shapes"]["overall"]
    return [
        fidelity,
        f"- Diversity: recall goes from {first['recall']:.3f} to {last['recall']:.3f}, peaking at "
        f"{best_recall['recall']:.3f} at w = {best_recall['guidance']:g}; precision from "
        f"{first['precision']:.3f} to {last['precision']:.3f}.",
        f"- Above w = {best_recall['guidance']:g}, recall {falls} while ShapesEval goes from "
        f"{best_recall['shapes']['overall']:.3f} to {last['shapes']['overall']:.3f}: "
        + (
            "guidance trades diversity for fidelity there, as Ho & Salimans report."
            if gain > 0
            else "no fidelity is bought with the lost diversity."
        ),
        f"- FID is lowest ({best_fid['fid']:.2f}) at w = {best_fid['guidance']:g}.",
    ]


REPORT_NAMES = {"samplers": "samplers_vs_steps", "guidance": "guidance_tradeoff"}


def write_report(args, results: list[dict], seconds: float, planned: int) -> Path:
    """Markdown, plot and JSON of the cells measured so far (``planned`` cells in all), in grid
    order."""
    name = REPORT_NAMES[args.sweep]
    order = [(c["sampler"], c["steps"], c["guidance"]) for c in planned_cells(args)]
    results = sorted(results, key=lambda r: order.index((r["sampler"], r["steps"], r["guidance"])))
    out_dir = Path(args.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"{name}.png"
    (plot_samplers if args.sweep == "samplers" else plot_guidance)(results, plot)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    title = {
        "samplers": "Samplers vs steps: does DDIM at ~50 steps match DDPM at 1000?",
        "guidance": "Classifier-free guidance: fidelity against diversity",
    }[args.sweep]
    fixed = (
        f"guidance {args.guidance:g}" if args.sweep == "samplers" else
        f"sampler {args.sampler}, {args.steps} steps"
    )  # fmt: skip
    lines = [
        f"# {title}",
        "",
        f"Command: `python {shlex.join(sys.argv)}`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}; total time {seconds / 60:.1f} min.",
        "",
        *(
            [
                f"**Incomplete: {len(results)} of {planned} cells measured so far** (continue with "
                "`--resume`).",
                "",
            ]
            if len(results) < planned
            else []
        ),
        f"Model `{args.model}`, {fixed}. ShapesEval on {suite_name(args)} ("
        + (f"one prompt in {args.suite_stride}, " if args.suite_stride > 1 else "")
        + f"{results[0]['num_images']['shapes'] // args.images_per_prompt} prompts x "
        f"{args.images_per_prompt} image(s); task columns are the six GenEval tasks); "
        + (
            f"FID, KID and precision/recall (k = 3) on shapes-features against {args.fid_images} "
            f"shapes validation renders, with {args.fid_images} images prompted by their "
            "captions. "
            if args.fid_images
            else "FID, KID and precision/recall not measured (--fid-images 0). "
        )
        + "s/image: sampling and decoding time per image in batches of "
        f"{args.batch_size}, averaged over all images of the cell.",
        "",
        *(
            [
                "w is difflab's guidance weight: the prediction is eps_u + w (eps_c - eps_u), so "
                "w = 0 is the unconditional model, w = 1 the conditional model without guidance, "
                "and Ho & Salimans's weight is w - 1.",
                "",
            ]
            if args.sweep == "guidance"
            else []
        ),
        f"![{name}]({plot.name})",
        "",
        "| sampler | steps | w " + TABLE_HEAD,
        "|---|---:|---:" + "|---:" * (len(TABLE_HEAD.split("|")) - 2) + "|",
    ]
    for r in results:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {row_cells(r)}")
    lines += ["", "## What the figures say", ""]
    counts = Counter(e["tag"] for e in sweep_suite(args))
    counts = {tag: n * args.images_per_prompt for tag, n in counts.items()}
    if args.sweep == "samplers":
        lines += samplers_findings(results, counts)
    else:
        lines += guidance_findings(results, counts)
    return write_report_text(out_dir / f"{name}.md", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=("samplers", "guidance"), required=True)
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--fid-images", type=int, default=1000, help="0 skips FID / P / R")
    parser.add_argument("--guidance", type=float, default=5.0, help="samplers sweep: fixed w")
    parser.add_argument("--sampler", default="dpmpp_2m", help="guidance sweep: fixed sampler")
    parser.add_argument("--steps", type=int, default=20, help="guidance sweep: fixed steps")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_STEPS))
    parser.add_argument("--max-steps", type=int, default=1000, help="skip cells above this")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--report-dir", default=str(ROOT / "docs" / "reports"))
    parser.add_argument("--suite-stride", type=int, default=1, help="every K-th suite prompt")
    parser.add_argument(
        "--suite-seed", type=int, default=0,
        help="0: the shipped ShapesEval suite; N: the held-out suite drawn from seed N",
    )  # fmt: skip
    parser.add_argument(
        "--weights", type=float, nargs="+", default=list(GUIDANCE_WEIGHTS),
        help="guidance sweep: the weights w",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep the cells already measured")
    args = parser.parse_args()
    if args.suite_stride < 1:
        parser.error(f"--suite-stride must be >= 1, got {args.suite_stride}")

    cells = planned_cells(args)
    if args.sweep == "samplers":  # the claim's cells first, so an early stop still answers it
        first = {cell: rank for rank, cell in enumerate(FIRST_CELLS)}
        cells.sort(key=lambda c: first.get((c["sampler"], c["steps"]), len(first)))
    done, seconds = load_partial(args)
    results = run_cells(args, cells, done, seconds)
    partial_path(args).unlink(missing_ok=True)
    print(f"wrote {Path(args.report_dir) / REPORT_NAMES[args.sweep]}.md ({len(results)} cells)")


def planned_cells(args) -> list[dict]:
    """The sweep's grid, in report order."""
    if args.sweep == "samplers":
        return [
            {"sampler": s, "steps": n, "guidance": args.guidance}
            for s in args.samplers
            for n in SAMPLER_STEPS[s]
            if n <= args.max_steps
        ]
    return [{"sampler": args.sampler, "steps": args.steps, "guidance": w} for w in args.weights]


if __name__ == "__main__":
    main()
