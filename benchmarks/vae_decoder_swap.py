"""A new decoder for shipped latent models, measured against the one they ship with, image by
image: every model samples its latents once (the decoder plays no part in sampling), and both
decoders decode the same latents. So the difference of the two ShapesEval scores is paired and
exact per image, and FID / precision / recall compare the same samples seen through each decoder.

    python benchmarks/vae_decoder_swap.py --vae runs/shapes-vae-decoder/vae
        [--models shapes-t2i shapes-t2i-small shapes-t2i-lcm shapes-t2i-progressive
         shapes-t2i-lcm-lora] [--images-per-prompt 4] [--fid-images 1000]
        [--report-dir docs/reports/vae_decoder]

Each model runs at its folder's default sampler, steps, guidance and guidance interval (those
of ``difflab eval shapes --model M``); a LoRA adapter's name runs it on its teacher. Suite image
i starts from the noise of seed i, as in the sweep benchmarks (``difflab eval shapes`` seeds
image k of prompt p with 1000 p + k, so its figures are other draws of the same quantities). The new decoder must decode the latent space the models were trained on: the
``shapes-vae-decoder`` recipe fine-tunes the decoder on the frozen encoder, which keeps it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from guidance_interval import TASKS, overall, paired_difference, task_means
from report_text import write_report_text

MODELS = (
    "shapes-t2i", "shapes-t2i-small", "shapes-t2i-lcm", "shapes-t2i-progressive",
    "shapes-t2i-lcm-lora",
)  # fmt: skip


def load_model(name: str):
    """A shipped model or folder, or a LoRA adapter's name (run on its teacher)."""
    from difflab.zoo import list_loras, load_pipeline, lora_teacher

    if name in list_loras():
        return load_pipeline(lora_teacher(name), lora=name)
    return load_pipeline(name)


def recording_decoder(pipeline) -> list[torch.Tensor]:
    """Make ``pipeline.decode`` keep every batch of latents it decodes (in order) in the list it
    returns, so the same latents can be decoded again with another VAE."""
    recorded, decode = [], pipeline.decode

    def decode_and_record(latents):
        recorded.append(latents.detach().cpu())
        return decode(latents)

    pipeline.decode = decode_and_record  # an instance attribute: this pipeline only
    return recorded


def decode_recorded(vae, recorded: list[torch.Tensor]) -> torch.Tensor:
    """Every recorded batch of latents decoded with ``vae``, in order: images in [-1, 1]."""
    from difflab.pipelines.text_to_image import decode_latents

    with torch.inference_mode():
        return torch.cat([decode_latents(vae, z).float() for z in recorded])


def pass_bits(images, indices, suite) -> dict:
    from difflab.eval.shapes import score_images

    rows = score_images(images, indices, suite)["results"]
    return {
        "tags": [row["tag"] for row in rows],
        "passed": "".join("1" if row["passed"] else "0" for row in rows),
    }


def measure(name: str, new_vae, args, suite, reference) -> dict:
    """ShapesEval pass bits and distribution figures of one model with each decoder."""
    from difflab.eval.distribution import compute_metric, generate_for_eval
    from difflab.eval.features import extract_features
    from difflab.eval.text_to_image import suite_images
    from difflab.generate import model_sampling

    pipeline = load_model(name)
    sampler, guidance, steps = model_sampling(pipeline, None, None, None)
    recorded = recording_decoder(pipeline)
    images, indices, _ = suite_images(
        pipeline, suite, args.images_per_prompt, steps=steps, sampler=sampler,
        guidance=guidance, batch_size=args.batch_size, progress=True,
    )  # fmt: skip
    cells = {
        "shipped": pass_bits(images, indices, suite),
        "new": pass_bits(decode_recorded(new_vae, recorded), indices, suite),
    }
    if args.fid_images:
        recorded.clear()
        fake, _ = generate_for_eval(
            pipeline, args.fid_images, steps=steps, sampler=sampler, guidance=guidance,
            batch_size=args.batch_size, progress=True,
        )  # fmt: skip
        fake_new = decode_recorded(new_vae, recorded)  # decode_latents clamps to [-1, 1]
        for key, samples in (("shipped", fake), ("new", fake_new)):
            features = extract_features(reference.network, samples, 256, progress=False)
            cells[key]["fid"] = compute_metric("fid", reference.features, features)[0]["fid"]
            cells[key].update(compute_metric("prd", reference.features, features)[0])
    return {"model": name, "sampler": sampler, "steps": steps, "guidance": guidance, **cells}


def report_lines(args, rows: list[dict], seconds: float, command: str) -> list[str]:
    lines = [
        "# A fine-tuned decoder against the shipped one, on the same latents",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}  ",
        f"Date: {datetime.date.today().isoformat()}; total time {seconds / 60:.1f} min.",
        "",
        f"New decoder: `{args.vae}`. Each model samples its latents once at its default settings "
        f"(ShapesEval: the shipped suite, {args.images_per_prompt} images per prompt; FID and "
        f"precision / recall: {args.fid_images} images prompted with the captions of as many "
        "validation scenes, against those scenes' renders, on `shapes-features`), and the "
        "shipped and the new decoder decode the same latents (suite image i starts from the "
        "noise of seed i). 'new - shipped': the paired "
        "difference of ShapesEval overall and twice its standard error.",
        "",
        "| model | settings | decoder | overall | new - shipped (2 SE) | "
        + " | ".join(TASKS)
        + " | FID | precision | recall |",
        "|---|---|---|---:|---:|" + "---:|" * len(TASKS) + "---:|---:|---:|",
    ]
    for row in rows:
        diff, se = paired_difference(row["new"], row["shipped"])
        for key in ("shipped", "new"):
            cell, scores = row[key], task_means(row[key])
            versus = f"{diff:+.3f} ({2 * se:.3f})" if key == "new" else "-"
            distribution = (
                f"{cell['fid']:.2f} | {cell['precision']:.3f} | {cell['recall']:.3f}"
                if "fid" in cell
                else " | | "
            )
            lines.append(
                f"| `{row['model']}` | {row['sampler']} {row['steps']} steps, w = "
                f"{row['guidance']:g} | {key} | {overall(cell):.3f} | {versus} | "
                + " | ".join(f"{scores.get(t, math.nan):.3f}" for t in TASKS)
                + f" | {distribution} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", help="the new VAE (folder or shipped model)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--fid-images", type=int, default=1000, help="0: ShapesEval only")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--report-dir", default="docs/reports/vae_decoder")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from its stored JSON"
    )
    args = parser.parse_args()
    out = Path(args.report_dir)
    if args.report_only:
        stored = json.loads((out / "vae_decoder.json").read_text())
        args = argparse.Namespace(**stored["settings"])
        lines = report_lines(args, stored["rows"], stored["seconds"], stored["command"])
        print(write_report_text(out / "vae_decoder.md", lines).read_text())
        return
    if args.vae is None:
        parser.error("--vae is required (the new VAE), unless --report-only")

    from difflab.eval.shapes import load_suite
    from difflab.eval.text_to_image import Reference
    from difflab.recipes.vae import load_frozen_vae

    began = time.perf_counter()
    new_vae = load_frozen_vae(args.vae, option="--vae")[1]
    suite = load_suite()
    reference = Reference.shapes(args.fid_images) if args.fid_images else None
    rows = []
    for name in args.models:
        rows.append(measure(name, new_vae, args, suite, reference))
        diff, se = paired_difference(rows[-1]["new"], rows[-1]["shipped"])
        print(f"{name}: ShapesEval {overall(rows[-1]['shipped']):.3f} -> "
              f"{overall(rows[-1]['new']):.3f} ({diff:+.3f}, 2 SE {2 * se:.3f})", flush=True)  # fmt: skip
    seconds = time.perf_counter() - began
    command = f"python {shlex.join(sys.argv)}"
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("vae", "images_per_prompt", "fid_images")}
    stored = {"command": command, "settings": settings, "seconds": seconds, "rows": rows}
    (out / "vae_decoder.json").write_text(json.dumps(stored, indent=1) + "\n")
    path = write_report_text(out / "vae_decoder.md", report_lines(args, rows, seconds, command))
    print(path.read_text())


if __name__ == "__main__":
    main()
