"""Class fidelity of a class-conditional digits model against classifier-free guidance weight.

Generates ``--per-class`` images of every digit at each guidance weight and reports the share a
classifier of real digits reads as the requested class (difflab.eval.digits), plus the pixel
standard deviation across images of the same class (a crude diversity figure), and writes a
sample grid. Prints a markdown table.

    python benchmarks/digits_eval.py --model digits [--per-class 50] [--steps 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from difflab.eval.digits import class_accuracy, fit_digits_classifier
from difflab.train.records import save_image_grid
from difflab.zoo import load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--grid", type=Path, default=None, help="write a 10x10 sample grid here")
    args = parser.parse_args()

    pipeline = load_pipeline(args.model)
    classifier = fit_digits_classifier()
    labels = torch.arange(10).repeat_interleave(args.per_class)
    print(f"classifier accuracy on real held-out digits: {classifier.validation_accuracy:.3f}")
    print(
        f"model {args.model}, {args.sampler} {args.steps} steps, {args.per_class} images per class"
    )
    print("| guidance | class accuracy | worst class | within-class pixel std | s/image |")
    print("|---:|---:|---:|---:|---:|")
    for w in args.guidance:
        start = time.perf_counter()
        images = pipeline.sample(labels.tolist(), args.steps, w, sampler=args.sampler, seed=0)
        seconds = (time.perf_counter() - start) / len(labels)
        report = class_accuracy(classifier, images, labels)
        worst = min(report["per_class"].items(), key=lambda kv: kv[1])
        spread = float(torch.stack([images[labels == c].std(0).mean() for c in range(10)]).mean())
        print(
            f"| {w:g} | {report['accuracy']:.3f} | {worst[0]}: {worst[1]:.2f} | {spread:.3f} | {seconds:.4f} |"
        )
    if args.grid is not None:
        grid_guidance = args.guidance[min(1, len(args.guidance) - 1)]
        grid_labels = torch.arange(10).repeat(10)  # one column per digit
        images = pipeline.sample(
            grid_labels.tolist(), args.steps, grid_guidance, sampler=args.sampler, seed=100
        )
        save_image_grid(images, args.grid, nrow=10)
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
