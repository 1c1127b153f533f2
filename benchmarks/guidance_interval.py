"""Classifier-free guidance in a limited interval (Kynkaanniemi et al. 2024) against guidance at
every step, on a shipped text-to-image model: ShapesEval per task, the share of images in which
the oracle detector finds no object at all (the failure a limited interval is meant to cure),
and seconds per image, each interval sampled from the same starting noise as the reference.

Because every cell starts from the same noise, its difference to the reference (the first
``--intervals`` entry) is measured per image: per task, the mean of pass(cell) - pass(reference)
and its standard error from the variance of those paired differences, which is smaller than two
independent binomial errors when the settings agree on most images. Two SE is the noise bar.

    python benchmarks/guidance_interval.py [--model shapes-t2i] [--intervals all 0,800 0,600]
        [--suite-seed 1] [--images-per-prompt 4] [--report-dir docs/reports/guidance_interval]

``--suite-seed 0`` is the shipped ShapesEval suite (the one model cards quote), N > 0 the
held-out suite of seed N (same task mix, other prompts), on which an interval should be chosen
before it is measured once on the shipped suite. Only position and color_attr prompts are drawn
from N (the other four tasks enumerate every shape, pair, count and colour, the same in every
suite), so a held-out check of those needs other starting noise too: ``--seed``. Reports:
``<report-dir>/suite<N>.md`` (+ .json), ``suite<N>-noise<seed>.md`` for ``--seed`` > 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
from pathlib import Path

import torch
from report_text import write_report_text

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
EVERY_STEP = "all"


def parse_interval(text: str) -> list[int] | None:
    """``all`` (guidance at every step) as None, ``LOW,HIGH`` as ``[LOW, HIGH]``."""
    from difflab.guidance import parse_guidance_interval

    return None if text == EVERY_STEP else parse_guidance_interval(text)


def interval_label(interval: list[int] | None) -> str:
    return "every step" if interval is None else f"{interval[0]} <= t <= {interval[1]}"


def measure(args, interval: list[int] | None, pipeline, suite: list[dict]) -> dict:
    """One cell: per-image pass bits and no-object bits (in suite order), seconds per image."""
    from difflab.eval.shapes import score_images
    from difflab.eval.text_to_image import suite_images

    images, indices, seconds = suite_images(
        pipeline, suite, args.images_per_prompt, steps=args.steps, sampler=args.sampler,
        guidance=args.guidance, seed=args.seed, batch_size=args.batch_size,
        guidance_interval=interval, progress=True,
    )  # fmt: skip
    rows = score_images(images, indices, suite)["results"]
    return {
        "interval": interval,
        "tags": [row["tag"] for row in rows],
        "passed": "".join("1" if row["passed"] else "0" for row in rows),
        "no_object": "".join("0" if row["detections"] else "1" for row in rows),
        "seconds_per_image": seconds / len(rows),
    }


def task_means(cell: dict, bits: str = "passed") -> dict[str, float]:
    """The mean of ``cell[bits]`` per task."""
    out = {}
    for task in TASKS:
        values = [b == "1" for b, tag in zip(cell[bits], cell["tags"], strict=True) if tag == task]
        if values:
            out[task] = sum(values) / len(values)
    return out


def overall(cell: dict) -> float:
    """ShapesEval overall: the unweighted mean of the task scores (GenEval's)."""
    scores = task_means(cell)
    return sum(scores.values()) / len(scores)


def paired_difference(cell: dict, reference: dict) -> tuple[float, float]:
    """ShapesEval overall of ``cell`` minus ``reference`` and its standard error, from the
    per-image differences of the pass bits (same prompts, same starting noise): per task the
    variance of the differences over its n images, / n; overall the mean over tasks."""
    if cell["tags"] != reference["tags"]:
        raise ValueError("paired differences need the same images (suite and images per prompt)")
    means, variances = [], []
    for task in TASKS:
        diffs = [
            int(a) - int(b)
            for a, b, tag in zip(cell["passed"], reference["passed"], cell["tags"], strict=True)
            if tag == task
        ]
        if not diffs:
            continue
        n = len(diffs)
        mean = sum(diffs) / n
        means.append(mean)
        variances.append(sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1) / n)
    return sum(means) / len(means), math.sqrt(sum(variances)) / len(means)


def findings(cells: list[dict]) -> list[str]:
    """Each interval against the reference (the first cell), with the verdict read off 2 SE."""
    reference, lines = cells[0], []
    for cell in cells[1:]:
        diff, se = paired_difference(cell, reference)
        verdict = "beyond" if abs(diff) > 2 * se else "within"
        ours, theirs = task_means(cell), task_means(reference)
        moved = max(TASKS, key=lambda t: abs(ours.get(t, 0.0) - theirs.get(t, 0.0)))
        empty, empty_ref = (sum(c == "1" for c in x["no_object"]) for x in (cell, reference))
        lines.append(
            f"- Guidance at {interval_label(cell['interval'])} against "
            f"{interval_label(reference['interval'])}: overall {overall(cell):.3f} vs "
            f"{overall(reference):.3f}, paired difference {diff:+.3f} (2 SE = {2 * se:.3f}, "
            f"{verdict} the noise); the task that moved most is {moved} ({theirs[moved]:.3f} -> "
            f"{ours[moved]:.3f}); images with no object {empty_ref} -> {empty} of "
            f"{len(cell['passed'])}; {reference['seconds_per_image'] / cell['seconds_per_image']:.2f}x "
            "the speed."
        )
    return lines


def write_report(args, cells: list[dict], seconds: float) -> Path:
    out_dir = Path(args.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"suite{args.suite_seed}" + (f"-noise{args.seed}" if args.seed else "")
    stored = {"command": f"python {shlex.join(sys.argv)}", "settings": settings(args),
              "seconds": seconds, "cells": cells}  # fmt: skip
    (out_dir / f"{name}.json").write_text(json.dumps(stored, indent=1) + "\n")
    suite = "the shipped ShapesEval suite" if not args.suite_seed else (
        f"the held-out suite of seed {args.suite_seed} (the shipped task mix, other prompts)"
    )  # fmt: skip
    head = "| guidance at | overall | vs first row (2 SE) | " + " | ".join(TASKS)
    lines = [
        "# Classifier-free guidance in a limited interval",
        "",
        f"Command: `{stored['command']}`  ",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}  ",
        f"Date: {datetime.date.today().isoformat()}; total time {seconds / 60:.1f} min.",
        "",
        f"Model `{args.model}`, {args.sampler} {args.steps} steps, guidance weight "
        f"{args.guidance:g}; ShapesEval on {suite}, {args.images_per_prompt} images per prompt "
        f"({len(cells[0]['passed'])} images per row, the same starting noise in every row). "
        "Outside the interval the conditional model runs alone (Kynkaanniemi et al. 2024). "
        "'vs first row': the paired difference of ShapesEval overall to the first row and twice "
        "its standard error. 'no object': images in which the detector finds no shape at all.",
        "",
        head + " | no object | s/image |",
        "|---|---:|---:|" + "---:|" * len(TASKS) + "---:|---:|",
    ]
    for cell in cells:
        scores = task_means(cell)
        if cell is cells[0]:
            versus = "-"
        else:
            diff, se = paired_difference(cell, cells[0])
            versus = f"{diff:+.3f} ({2 * se:.3f})"
        empty = sum(c == "1" for c in cell["no_object"])
        lines.append(
            f"| {interval_label(cell['interval'])} | {overall(cell):.3f} | {versus} | "
            + " | ".join(f"{scores.get(t, math.nan):.3f}" for t in TASKS)
            + f" | {empty} | {cell['seconds_per_image']:.4f} |"
        )
    no_object = {t: [task_means(c, "no_object").get(t, math.nan) for c in cells] for t in TASKS}
    lines += [
        "",
        "Share of images with no object, per task:",
        "",
        "| task | " + " | ".join(interval_label(c["interval"]) for c in cells) + " |",
        "|---|" + "---:|" * len(cells),
        *(
            f"| {t} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
            for t, values in no_object.items()
        ),
        "",
        "## What the figures say",
        "",
        *findings(cells),
    ]
    return write_report_text(out_dir / f"{name}.md", lines)


def settings(args) -> dict:
    keys = ("model", "sampler", "steps", "guidance", "suite_seed", "images_per_prompt", "seed")
    return {key: getattr(args, key) for key in keys}


def main() -> None:
    import time

    from difflab.eval.shapes import build_default_suite, load_suite
    from difflab.zoo import load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument(
        "--intervals", nargs="+", default=[EVERY_STEP, "0,800", "0,600", "0,400"],
        help="'all' (every step) or LOW,HIGH timesteps; the first is the reference",
    )  # fmt: skip
    parser.add_argument("--suite-seed", type=int, default=1, help="0: the shipped suite")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--report-dir", default=str(ROOT / "docs" / "reports" / "guidance_interval")
    )
    args = parser.parse_args()
    try:
        intervals = [parse_interval(text) for text in args.intervals]
    except ValueError as error:
        parser.error(str(error))
    began = time.perf_counter()
    pipeline = load_pipeline(args.model)
    suite = build_default_suite(args.suite_seed) if args.suite_seed else load_suite()
    cells = []
    for interval in intervals:
        cells.append(measure(args, interval, pipeline, suite))
        path = write_report(args, cells, time.perf_counter() - began)
        print(f"{interval_label(interval)}: overall {overall(cells[-1]):.3f}", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
