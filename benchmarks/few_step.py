"""Few-step generation measured: ShapesEval overall and FID at 1, 2, 4 and 8 steps for the teacher
(DDIM on the trailing grid, DPM-Solver++(2M)), its progressively distilled students (the student of
N steps for N steps), its latent consistency model, its multistep consistency model (Heek et al.
2024, sampled deterministically) and its LCM-LoRA, against the teacher at 50
steps (dpmpp_2m); wall time per image; every figure also as a ratio to the 50-step teacher's.
Writes docs/reports/few_step.md, .json and .png.

    python benchmarks/few_step.py --teacher shapes-t2i-small \\
        --progressive runs/distill-progressive --lcm runs/distill-lcm/pipeline \\
        --lcm-lora runs/distill-lcm-lora/lora \\
        --multistep runs/distill-multistep-consistency/pipeline [--fid-images 1000] \\
        [--images-per-prompt 1]

Methods whose model is not given are skipped. ``--add`` merges a later call into the stored
report (same settings): it measures the methods it is given and reuses the stored teacher rows. A
smoke check on tiny folders (a few prompts, no FID) runs in seconds: ``--prompts 6 --fid-images 0
--report-dir /tmp/few_step``.

Each cell is one call of difflab.eval.text_to_image.evaluate_text_to_image (the whole ShapesEval
suite, ``--images-per-prompt`` each, and ``--fid-images`` images prompted by the captions of the
shapes validation scenes they are compared with), from the same starting noise for every model.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import shlex
import sys
import time
from pathlib import Path

from report_text import write_report_text
from sampling_sweeps import machine

ROOT = Path(__file__).resolve().parents[1]
STEPS = (1, 2, 4, 8)
REFERENCE = {"method": "teacher (reference)", "sampler": "dpmpp_2m", "steps": 50}


def models(args) -> dict:
    """Loaders for the methods given on the command line: name -> (steps -> pipeline or None)."""
    from difflab.distill import load_lcm_lora
    from difflab.zoo import load_pipeline, resolve_lora

    teacher = load_pipeline(args.teacher)
    trailing_ddim = {"sampler": "ddim", "sampler_options": {"spacing": "trailing"}}
    found = {
        "teacher ddim": lambda n: dataclasses.replace(teacher, defaults=trailing_ddim),
        "teacher dpmpp_2m": lambda n: dataclasses.replace(teacher, defaults={}),
    }
    if args.progressive:
        students = {}

        def student(n: int):
            folder = Path(args.progressive) / f"steps-{n}" / "pipeline"
            if n not in students:
                students[n] = load_pipeline(folder) if folder.is_dir() else None
            return students[n]

        found["progressive"] = student
    if args.lcm:
        lcm = load_pipeline(args.lcm)
        found["LCM"] = lambda n: lcm
    if args.multistep:
        multistep = load_pipeline(args.multistep)
        found["multistep CM"] = lambda n: multistep
    if args.lcm_lora:
        with_lora = load_lcm_lora(load_pipeline(args.teacher), resolve_lora(args.lcm_lora))
        found["LCM-LoRA"] = lambda n: with_lora
    return found


# The settings every row of one report shares (checked by --add) and the order of its methods.
SETTINGS = ("teacher", "guidance", "images_per_prompt", "prompts", "fid_images")
METHOD_ARGS = {"progressive": "progressive", "LCM": "lcm", "multistep CM": "multistep",
               "LCM-LoRA": "lcm_lora"}  # fmt: skip
METHODS = ("teacher (reference)", "teacher ddim", "teacher dpmpp_2m", "progressive", "LCM",
           "multistep CM", "LCM-LoRA")  # fmt: skip


def given_methods(args) -> set[str]:
    """The distilled methods whose model this call names."""
    return {method for method, name in METHOD_ARGS.items() if getattr(args, name)}


def stored_report(args) -> dict:
    """With ``--add``: the ``results``, ``commands`` and ``costs`` of the stored report, whose
    settings must be this call's (else the ratios would mix references); without it, or before
    a first report, none of each."""
    path = Path(args.report_dir) / "few_step.json"
    if not args.add or not path.is_file():
        return {"results": [], "commands": [], "costs": []}
    stored = json.loads(path.read_text())
    settings = {name: getattr(args, name) for name in SETTINGS}
    if not isinstance(stored, dict) or stored.get("settings") != settings:
        raise SystemExit(
            f"--add merges rows measured alike, but {path} was written with settings "
            f"{stored.get('settings') if isinstance(stored, dict) else 'unknown'} and this call "
            f"has {settings}; rerun with those, or without --add to start a new report."
        )
    return {key: stored.get(key, []) for key in ("results", "commands", "costs")}


def run_cells(args, kept: list[dict]) -> list[dict]:
    """Measure every cell of the methods given, except the teacher's cells already in ``kept``
    (a stored report being added to); ``kept`` rows of methods not measured now stay."""
    from difflab.eval.shapes import load_suite
    from difflab.eval.text_to_image import Reference, evaluate_text_to_image

    reference = Reference.shapes(args.fid_images) if args.fid_images else None
    suite = load_suite()
    suite = suite[: args.prompts] if args.prompts else suite
    loaders = models(args)
    cells = [(REFERENCE["method"], "teacher dpmpp_2m", REFERENCE["steps"])]
    cells += [(name, name, n) for name in loaders for n in args.steps]
    stored_teacher = {(r["method"], r["steps"]) for r in kept if r["method"].startswith("teacher")}
    cells = [c for c in cells if (c[0], c[2]) not in stored_teacher]
    measured = given_methods(args)
    results = [r for r in kept if r["method"] not in measured]
    for method, loader, steps in cells:
        pipeline = loaders[loader](steps)
        if pipeline is None:
            print(f"{method:>18} {steps:>2} steps: no model, skipped", flush=True)
            continue
        # the LCM-LoRA samples at its own guidance (1: the guided teacher is distilled in)
        wanted = None if method == "LCM-LoRA" else args.guidance
        sampler, guidance, _ = pipeline.sampling_settings(None, wanted)
        result = evaluate_text_to_image(
            pipeline, steps=steps, sampler=sampler, guidance=guidance, suite=suite,
            images_per_prompt=args.images_per_prompt, reference=reference,
            batch_size=args.batch_size,
        )  # fmt: skip
        row = {"method": method, "sampler": sampler, "steps": steps, "guidance": guidance, **result}
        results.append(row)
        print(
            f"{method:>18} {steps:>2} steps ({sampler}, w={guidance:g}): ShapesEval "
            f"{result['shapes']['overall']:.3f}  FID {result.get('fid', float('nan')):.2f}  "
            f"{result['seconds_per_image']:.4f} s/image",
            flush=True,
        )
    results.sort(key=lambda r: (METHODS.index(r["method"]), r["steps"]))
    add_ratios(results)
    return results


def add_ratios(results: list[dict]) -> None:
    """Each cell's ShapesEval, FID and time per image over the 50-step teacher's."""
    ref = results[0]
    for row in results:
        row["ratio"] = {
            "shapes": _ratio(row["shapes"]["overall"], ref["shapes"]["overall"]),
            "fid": _ratio(row.get("fid"), ref.get("fid")),
            "time": _ratio(row["seconds_per_image"], ref["seconds_per_image"]),
        }


def _ratio(value, reference) -> float:
    if value is None or not reference:
        return float("nan")
    return value / reference


# The targets at 4 steps: the ShapesEval ratio to the 50-step teacher (consistency
# distillation's 95% holds the multistep variant to the LCM's bar).
TARGETS = {"LCM": 0.95, "multistep CM": 0.95, "progressive": 0.90}


def target_rows(results: list[dict], steps: int = 4) -> list[dict]:
    """For each distilled method at ``steps``: its ShapesEval ratio with twice its standard error
    (delta method over the cell's and the reference's binomial errors), the target (if the issue
    sets one), and whether it beats the teacher's own DDIM at the same step count on ShapesEval
    (as a point estimate, and clearly: by more than 2 SE of the difference, the issue's "clearly
    beat") and on FID (the LCM paper's comparison). The cells share prompts and starting noise,
    so their errors are correlated and the independent-error 2 SE used here is conservative."""
    ddim = {r["steps"]: r for r in results if r["method"] == "teacher ddim"}
    reference = results[0]
    rows = []
    for r in results[1:]:
        if r["method"].startswith("teacher") or r["steps"] != steps:
            continue
        base = ddim.get(steps)
        target = TARGETS.get(r["method"])
        ratio = r["ratio"]["shapes"]
        rows.append({
            "method": r["method"], "steps": steps, "ratio": ratio,
            "ratio_2se": _ratio_two_se(r, reference),
            "target": target, "met": None if target is None else ratio >= target,
            "beats_ddim_shapes": None if base is None else
            r["shapes"]["overall"] > base["shapes"]["overall"],
            "beats_ddim_shapes_clearly": None if base is None else _clearly_above(r, base),
            "beats_ddim_fid": None if base is None or "fid" not in r else r["fid"] < base["fid"],
        })  # fmt: skip
    return rows


def _two_se_of_difference(a: dict, b: dict) -> float | None:
    errors = [cell["shapes"].get("overall_stderr") for cell in (a, b)]
    return None if None in errors else 2 * math.hypot(*errors)


def _clearly_above(cell: dict, base: dict) -> bool | None:
    """Whether ``cell``'s ShapesEval overall exceeds ``base``'s by more than 2 SE of the
    difference (None where a cell has no standard error)."""
    noise = _two_se_of_difference(cell, base)
    return None if noise is None else cell["shapes"]["overall"] - base["shapes"]["overall"] > noise


def _ratio_two_se(cell: dict, reference: dict) -> float | None:
    """2 SE of ``cell`` / ``reference`` (ShapesEval overall) by the delta method: the ratio x
    sqrt of the summed squared relative errors."""
    relative = []
    for r in (cell, reference):
        error, value = r["shapes"].get("overall_stderr"), r["shapes"]["overall"]
        if error is None or not value:
            return None
        relative.append(error / value)
    ratio = cell["shapes"]["overall"] / reference["shapes"]["overall"]
    return 2 * ratio * math.hypot(*relative)


def distillation_costs(args) -> list[dict]:
    """Training updates and wall minutes of each distillation, read from the ``results.json``
    its recipe wrote in the run folder (none for a shipped model given by name)."""
    costs = []
    for method in sorted(given_methods(args), key=METHODS.index):
        given = Path(getattr(args, METHOD_ARGS[method]))
        folder = given if method == "progressive" else given.parent  # a run, or its pipeline/lora
        path = folder / "results.json"
        if not path.is_file():
            continue
        figures = json.loads(path.read_text())
        stages = figures.get("stages") or {"all": figures}
        costs.append({
            "method": method, "run": str(folder),
            "updates": sum(stage["steps"] for stage in stages.values()),
            "minutes": sum(stage["train_seconds"] for stage in stages.values()) / 60,
            "stages": {name: stage["steps"] for name, stage in stages.items()},
        })  # fmt: skip
    return costs


def print_ratios(results: list[dict]) -> None:
    print("\nratios to the teacher at 50 steps (ShapesEval: higher is better; FID, time: lower)")
    for row in results[1:]:
        r = row["ratio"]
        print(
            f"{row['method']:>18} {row['steps']:>2} steps: ShapesEval x{r['shapes']:.2f}  "
            f"FID x{r['fid']:.2f}  time x{r['time']:.3f}"
        )


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, rows = results[0], results[1:]
    panels = [("ShapesEval overall (higher is better)", lambda r: r["shapes"]["overall"])]
    if "fid" in ref:
        panels.append(("FID (lower is better)", lambda r: r["fid"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    steps = sorted({r["steps"] for r in rows})
    for ax, (title, value) in zip(axes[0], panels, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = [r for r in rows if r["method"] == method]
            ax.plot([r["steps"] for r in cells], [value(r) for r in cells], "o-", label=method)
        ax.axhline(value(ref), color="k", ls="--", lw=1, label="teacher, 50 steps")
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.set_xlabel("sampling steps (model calls; CFG doubles the teacher's)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(
    args, results: list[dict], costs: list[dict], commands: list[str], seconds: float
) -> Path:
    out = Path(args.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "few_step.png")
    stored = {
        "settings": {name: getattr(args, name) for name in SETTINGS}, "commands": commands,
        "results": results, "targets": target_rows(results), "costs": costs,
    }  # fmt: skip
    (out / "few_step.json").write_text(json.dumps(stored, indent=1) + "\n")
    nan = float("nan")
    lines = [
        "# Few-step generation: distilled students against their teacher",
        "",
        "Commands (rows of later ones replace the methods they measure): "
        + "; ".join(f"`{c}`" for c in commands)
        + "  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}; total time {seconds / 60:.1f} min.",
        "",
        f"Teacher `{args.teacher}`; ShapesEval on the default suite ({args.prompts or 'all'} "
        f"prompts x {args.images_per_prompt} "
        f"image(s)); FID on shapes-features against {args.fid_images} shapes validation renders "
        "(0: not measured). Guidance w: the teacher's classifier-free guidance weight, the "
        "progressive student's, the LCM's and the multistep CM's input w; the LCM-LoRA distils "
        "one w and samples without guidance. The teacher's DDIM visits the trailing grid (Lin et al. 2024), as the "
        "progressive students do. Ratios: the cell's figure over the 50-step teacher's. 2 SE: twice "
        "the standard error of ShapesEval overall (binomial per task), the size of a difference "
        "that is not noise.",
        "",
        "![few-step generation](few_step.png)",
        "",
        "| method | sampler | steps | w | ShapesEval | 2 SE | FID | s/image | ShapesEval ratio | "
        "FID ratio | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["ratio"]
        lines.append(
            f"| {r['method']} | {r['sampler']} | {r['steps']} | {r['guidance']:g} | "
            f"{r['shapes']['overall']:.3f} | {2 * r['shapes'].get('overall_stderr', nan):.3f} | "
            f"{r.get('fid', nan):.2f} | {r['seconds_per_image']:.4f} | {ratio['shapes']:.2f} | "
            f"{ratio['fid']:.2f} | {ratio['time']:.3f} |"
        )
    lines += ["", *targets_text(target_rows(results)), *costs_text(costs)]
    return write_report_text(out / "few_step.md", lines)


def _yes_no(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def targets_text(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Targets at 4 steps",
        "",
        "Ratio 2 SE: twice the standard error of the ratio (its cell's and the reference's "
        "binomial errors). Beats the teacher's DDIM on ShapesEval: *clearly* where the "
        "difference exceeds 2 SE of the difference (independent errors, conservative for cells "
        "drawn from the same prompts and noise), *within the noise* where it does not.",
        "",
        "| method | ShapesEval ratio | ratio 2 SE | target | met | beats teacher DDIM, "
        "ShapesEval | beats teacher DDIM, FID |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        target = "-" if r["target"] is None else f"{r['target']:.2f}"
        two_se = "-" if r.get("ratio_2se") is None else f"{r['ratio_2se']:.3f}"
        lines.append(
            f"| {r['method']} | {r['ratio']:.3f} | {two_se} | {target} | {_yes_no(r['met'])} | "
            f"{_beats_text(r)} | {_yes_no(r['beats_ddim_fid'])} |"
        )
    return [*lines, ""]


def _beats_text(row: dict) -> str:
    verdict = _yes_no(row["beats_ddim_shapes"])
    clearly = row.get("beats_ddim_shapes_clearly")
    if verdict != "yes" or clearly is None:
        return verdict
    return "yes, clearly" if clearly else "yes, within the noise"


def costs_text(costs: list[dict]) -> list[str]:
    if not costs:
        return []
    lines = [
        "## Distillation cost",
        "",
        "Read from each run's results.json (its train_seconds): wall minutes of the updates on "
        "the machine that ran them, not counting the one-off encoding of the training scenes "
        "that the recipes share.",
        "",
        "| method | run | updates | stages | minutes |",
        "|---|---|---:|---|---:|",
    ]
    for c in costs:
        stages = ", ".join(f"{name} {n}" for name, n in c["stages"].items())
        lines.append(
            f"| {c['method']} | `{c['run']}` | {c['updates']} | {stages} | {c['minutes']:.1f} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="shapes-t2i-small", help="shipped name or folder")
    parser.add_argument("--progressive", help="run folder of distill-progressive (steps-N/)")
    parser.add_argument("--lcm", help="pipeline folder of distill-lcm, or a shipped model's name")
    parser.add_argument("--multistep", help="pipeline folder of distill-multistep-consistency")
    parser.add_argument(
        "--lcm-lora",
        help="LoRA folder of distill-lcm-lora (its lora/), or a shipped adapter's name",
    )
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=0, help="first N suite prompts (0: all)")
    parser.add_argument("--fid-images", type=int, default=1000, help="0 skips FID")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--report-dir", default=str(ROOT / "docs" / "reports"))
    parser.add_argument(
        "--add", action="store_true",
        help="merge into the stored report: measure the methods given, reuse its teacher rows "
        "and keep its other methods' rows (same settings required); for models that finish "
        "training at different times",
    )  # fmt: skip
    args = parser.parse_args()
    began = time.perf_counter()
    stored = stored_report(args)
    results = run_cells(args, stored["results"])
    print_ratios(results)
    measured = given_methods(args)  # a method measured now brings its own cost (or none)
    costs = [c for c in stored["costs"] if c["method"] not in measured]
    costs = sorted(costs + distillation_costs(args), key=lambda c: METHODS.index(c["method"]))
    commands = [*stored["commands"], f"python {shlex.join(sys.argv)}"]
    report = write_report(args, results, costs, commands, time.perf_counter() - began)
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
