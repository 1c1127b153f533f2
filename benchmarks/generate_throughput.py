"""Images per second of difflab and of plain diffusers on the same weights, side by side.

Both load the same text-to-image folder and run DDIM with the same steps, guidance, batch and
starting noise (StableDiffusionPipeline for diffusers), so the ratio measures the two sampling
loops and nothing else; the latents they produce are compared too. Prints one table.

    python benchmarks/generate_throughput.py [--model shapes-t2i] [--steps 20] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch


def timed_side_by_side(fns, repeats: int) -> list[tuple[float, torch.Tensor]]:
    """Median seconds per call of each function and its last output. The calls alternate
    (a, b, a, b, ...) after one warm-up each, so drifts in machine load hit both alike."""
    outputs = [fn() for fn in fns]  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outputs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outputs, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-t2i", help="shipped model name or folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from difflab.schedules import timesteps
    from difflab.zoo import load_pipeline, resolve_model

    diffusers_logging.set_verbosity_error()
    folder = resolve_model(args.model)
    ours = load_pipeline(folder)
    theirs = StableDiffusionPipeline.from_pretrained(
        Path(folder), text_encoder=ours.prompt_encoder.text_encoder
    )
    theirs.set_progress_bar_config(disable=True)
    spacing = timesteps(ours.schedule, args.steps, "leading", offset=1)  # what SD's DDIM visits
    print(
        f"model {folder.name}, DDIM {args.steps} steps, guidance {args.guidance}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("| batch | library | images/s | s/image | s/batch |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batches:
        prompts = ["a red circle above a blue square"] * batch

        def run_ours(prompts=prompts):
            with torch.no_grad():
                latents = ours.latents(
                    prompts,
                    steps=args.steps,
                    guidance=args.guidance,
                    sampler="ddim",
                    seed=0,
                    spacing=spacing,
                    guidance_interval="all",  # diffusers' pipeline guides at every step
                )
                return ours.decode(latents)

        def run_theirs(prompts=prompts, batch=batch):
            generators = [torch.Generator().manual_seed(i) for i in range(batch)]
            return theirs(
                prompts,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=generators,
                output_type="pt",
            ).images

        (t_ours, images_ours), (t_theirs, images_theirs) = timed_side_by_side(
            (run_ours, run_theirs), args.repeats
        )
        difference = ((images_ours + 1) / 2 - images_theirs).abs().max().item()
        for name, seconds in (("difflab", t_ours), ("diffusers", t_theirs)):
            print(
                f"| {batch} | {name} | {batch / seconds:.2f} | {seconds / batch:.4f} | "
                f"{seconds:.4f} |"
            )
        print(
            f"batch {batch}: difflab / diffusers throughput ratio {t_theirs / t_ours:.2f}, "
            f"max |image difference| (0..1 scale) {difference:.2e}"
        )


if __name__ == "__main__":
    main()
