"""Seconds per image of an LCM-LoRA sampled unfused (LoRA branches beside the adapted layers)
and fused into the weights (``load_lcm_lora(..., fuse=True)``, the default), side by side.

Both load the same teacher and adapter and sample the same prompts from the same starting noise
with the adapter's own settings (the lcm sampler, its steps, guidance 1), calls alternating (see
:func:`generate_throughput.timed_side_by_side`); the largest latent difference between the two is
printed too (fusing only reorders floating-point sums). Prints one table.

    python benchmarks/lora_fusing.py [--lora shapes-t2i-lcm-lora] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import platform

import torch
from generate_throughput import timed_side_by_side


def main() -> None:
    from difflab.distill import load_lcm_lora
    from difflab.zoo import load_pipeline, lora_teacher, resolve_lora

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", default="shapes-t2i-lcm-lora", help="shipped adapter or folder")
    parser.add_argument("--model", default=None, help="its teacher (default: the one it records)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = resolve_lora(args.lora)
    teacher = args.model or lora_teacher(folder)
    pipes = {
        fuse: load_lcm_lora(load_pipeline(teacher), folder, fuse=fuse) for fuse in (False, True)
    }
    print(f"{args.lora} on {teacher}; {platform.machine()} CPU, {args.threads} torch threads, "
          f"torch {torch.__version__}; median of {args.repeats} calls\n")  # fmt: skip
    print("| batch | unfused s/image | fused s/image | fused speed-up | max latent difference |")
    print("|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        prompts = ["a red circle above a blue square", "two yellow stars"] * batch
        prompts = prompts[:batch]
        calls = [lambda p=pipes[fuse], q=prompts: p.latents(q, seed=0) for fuse in (False, True)]
        (unfused, a), (fused, b) = timed_side_by_side(calls, args.repeats)
        difference = (a - b).abs().max().item()
        print(f"| {batch} | {unfused / batch:.4f} | {fused / batch:.4f} | "
              f"{unfused / fused:.2f} | {difference:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
