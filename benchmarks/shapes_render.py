"""Rendering throughput of the shapes world on one core.

Run from the repository root: ``python -m benchmarks.shapes_render``. Prints scenes per second for
rendering alone, sampling + rendering + a caption, and full ``ShapesDataset`` items (tensor), at
several resolutions, and writes ``docs/reports/shapes_render.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from difflab.data.shapes import ShapesDataset, captions, render, sample_scene


def rate(fn, count: int) -> float:
    """Calls per second of ``fn(i)`` over ``count`` calls (best of three runs)."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="scenes per measurement")
    parser.add_argument("--report", type=Path, default=Path("docs/reports/shapes_render.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(args.count)]
    rows = []
    for size in (16, 32, 64, 128):
        n = args.count if size <= 64 else args.count // 4
        render_rate = rate(lambda i, s=size: render(scenes[i], s), n)
        full_rate = rate(
            lambda i, s=size: (
                render(sample_scene(np.random.default_rng(i)), s),
                captions(scenes[i], np.random.default_rng(i)),
            ),
            n,
        )
        dataset = ShapesDataset(n, size=size)
        item_rate = rate(lambda i, d=dataset: d[i], n)
        rows.append((size, render_rate, full_rate, item_rate))
    header = "| size | render only (scenes/s) | sample + render + caption (/s) | ShapesDataset item (/s) |\n|---:|---:|---:|---:|"
    table = "\n".join(f"| {s} px | {a:,.0f} | {b:,.0f} | {c:,.0f} |" for s, a, b, c in rows)
    print(header + "\n" + table)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        "# Shapes world rendering throughput\n\n"
        f"One process, one thread, {args.count} default scenes (1-4 objects), best of three runs; {machine}.\n"
        "Command: `python -m benchmarks.shapes_render`.\n\n" + header + "\n" + table + "\n"
    )
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
