"""Accuracy of the ShapesEval detector on clean renders and its degradation under blur, noise and
JPEG compression; plus the ShapesEval score of the suite's own ground-truth renders.

Run from the repository root: ``python -m benchmarks.shapes_detector`` (about a minute on one
core). Writes ``docs/reports/shapes_detector.md`` and ``docs/images/shapes_detector_degradation.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from difflab.data.shapes import SceneConfig, render, sample_scene
from difflab.eval.shapes import (
    detect,
    detector_accuracy,
    evaluate_detections,
    load_suite,
    scene_for_prompt,
    summarise,
)
from difflab.eval.shapes_detector import degrade

LEVELS = {
    "blur": (0.0, 0.5, 0.75, 1.0, 1.25, 1.5),
    "noise": (0.0, 0.02, 0.05, 0.08, 0.1, 0.15),
    "jpeg": (100, 95, 85, 75, 50, 30),
}
UNITS = {"blur": "Gaussian sigma (px)", "noise": "noise std ([0, 1] units)", "jpeg": "JPEG quality"}
ATTRIBUTES = ("shape", "colour", "size", "count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clean-scenes", type=int, default=2000)
    parser.add_argument("--degraded-scenes", type=int, default=400)
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--report", type=Path, default=Path("docs/reports/shapes_detector.md"))
    parser.add_argument(
        "--plot", type=Path, default=Path("docs/images/shapes_detector_degradation.png")
    )
    args = parser.parse_args()
    lines = ["# ShapesEval detector: accuracy and robustness", ""]
    lines += [
        "Command: `python -m benchmarks.shapes_detector` (seeded; scenes from the default `SceneConfig`: 1-4 objects,",
        "7 shapes, 10 colours, 2 sizes, plain or lightly textured backgrounds). Accuracy per attribute is the fraction",
        "of ground-truth objects whose matched detection has the right value (a missed object counts as wrong);",
        "`count` is the fraction of images with exactly the right number of detections.",
        "",
        "## Clean renders",
        "",
        "| size | scenes | objects | shape | colour | size | count | centre error (px) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rng = np.random.default_rng(2024)
    for size in (16, 32, 64):
        scenes = [sample_scene(rng) for _ in range(args.clean_scenes)]
        acc = detector_accuracy(scenes, [render(s, size) for s in scenes])
        objects = sum(len(s.objects) for s in scenes)
        row = (
            f"| {size} px | {len(scenes)} | {objects} | "
            + " | ".join(f"{acc[a]:.4f}" for a in ATTRIBUTES)
            + f" | {acc['centre_error_px']:.3f} |"
        )
        print(row)
        lines.append(row)

    lines += [
        "",
        f"## Other scene distributions at {args.size} px ({args.degraded_scenes} scenes each; not what ShapesEval renders)",
        "",
        "| scenes | detector | shape | colour | size | count | images/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, config, rotations in (
        ("default", SceneConfig(), 1),
        ("overlap allowed (occluded objects)", SceneConfig(allow_overlap=True), 1),
        ("random rotation", SceneConfig(rotate=True), 12),
    ):
        scenes = [sample_scene(rng, config) for _ in range(args.degraded_scenes)]
        images = [render(s, args.size) for s in scenes]
        start = time.perf_counter()
        acc = detector_accuracy(scenes, images, rotations=rotations)
        speed = len(images) / (time.perf_counter() - start)
        row = (
            f"| {name} | rotations={rotations} | "
            + " | ".join(f"{acc[a]:.3f}" for a in ATTRIBUTES)
            + f" | {speed:.0f} |"
        )
        print(row)
        lines.append(row)

    lines += ["", f"## Degradation at {args.size} px ({args.degraded_scenes} scenes per level)", ""]
    scenes = [sample_scene(rng) for _ in range(args.degraded_scenes)]
    clean = [render(s, args.size) for s in scenes]
    curves: dict[str, list[dict]] = {}
    for kind, levels in LEVELS.items():
        lines += [
            f"| {UNITS[kind]} | " + " | ".join(ATTRIBUTES) + " |",
            "|---:|" + "---:|" * len(ATTRIBUTES),
        ]
        curves[kind] = []
        for level in levels:
            noise_rng = np.random.default_rng(7)
            images = [degrade(im, kind, level, noise_rng) for im in clean]
            acc = detector_accuracy(scenes, images)
            curves[kind].append(acc)
            row = f"| {level} | " + " | ".join(f"{acc[a]:.3f}" for a in ATTRIBUTES) + " |"
            print(kind, row)
            lines.append(row)
        lines.append("")

    suite = load_suite()
    results = []
    for index, entry in enumerate(suite):
        for k in range(args.images_per_prompt):
            scene = scene_for_prompt(entry, np.random.default_rng([index, k]))
            passed, _ = evaluate_detections(detect(render(scene, args.size)), entry)
            results.append({"tag": entry["tag"], "passed": passed})
    report = summarise(results)
    lines += [
        f"## Ground truth of the default suite ({len(suite)} prompts x {args.images_per_prompt} renders at {args.size} px)",
        "",
        "| task | score |",
        "|---|---:|",
        *[
            f"| {tag} | {task['score']:.4f} ({task['passed']}/{task['total']}) |"
            for tag, task in report["tasks"].items()
        ],
        f"| **overall** | **{report['overall']:.4f}** |",
        "",
        f"![degradation curves](../images/{args.plot.name})",
        "",
    ]
    print(f"ground-truth suite overall {report['overall']:.4f}")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
    for axis, (kind, levels) in zip(axes, LEVELS.items(), strict=True):
        for attribute in ATTRIBUTES:
            axis.plot(levels, [c[attribute] for c in curves[kind]], marker="o", label=attribute)
        axis.set_xlabel(UNITS[kind])
        axis.set_title(kind)
        axis.grid(alpha=0.3)
        if kind == "jpeg":
            axis.invert_xaxis()
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower left")
    figure.suptitle(f"ShapesEval detector under corruption ({args.size} px renders)")
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=80)
    print(f"wrote {args.report} and {args.plot}")


if __name__ == "__main__":
    main()
