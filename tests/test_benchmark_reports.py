"""Regenerating a benchmark report keeps the hand-written Reading section (benchmarks/report_text)."""

import math


def test_rewriting_a_report_keeps_its_reading_and_flags_it(load_benchmark, tmp_path):
    write = load_benchmark("report_text").write_report_text
    path = tmp_path / "r.md"
    write(path, ["# Sweep", "", "| 0.40 |"])
    assert path.read_text() == "# Sweep\n\n| 0.40 |\n"  # nothing to keep yet
    path.write_text(path.read_text() + "\n## Reading\n\n- The claim holds (0.40).\n")
    write(path, ["# Sweep", "", "| 0.45 |"])
    write(path, ["# Sweep", "", "| 0.50 |"])  # twice: one flag line, not two
    text = path.read_text()
    assert text.startswith("# Sweep\n\n| 0.50 |\n\n## Reading\n\n- The claim holds (0.40).\n")
    assert "| 0.45 |" not in text and text.count("written for an earlier run") == 1
    # a heading that carries a note is a Reading heading too
    path.write_text("# Sweep\n\n## Reading (2026-11-23: part one)\n\n- Held.\n")
    write(path, ["# Sweep", "", "| 0.60 |"])
    assert path.read_text().startswith("# Sweep\n\n| 0.60 |\n\n## Reading (2026-11-23: part one)\n")
    # a report that brings its own Reading replaces the old one
    write(path, ["# Sweep", "", "## Reading", "", "- new"])
    assert path.read_text() == "# Sweep\n\n## Reading\n\n- new\n"


def test_architecture_report_is_rewritten_from_its_json_with_loss_curves(
    load_benchmark, tmp_path, monkeypatch
):
    import json
    import sys

    runs = tmp_path / "runs"
    results = []
    for name, loss in (("unet", 0.05), ("dit", 0.06)):
        (runs / name).mkdir(parents=True)
        lines = [json.dumps({"step": 10 * i, "loss": loss + 1 / i}) for i in range(1, 40)]
        (runs / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        results.append({
            "name": name, "parameters": 3_000_000, "steps": 390, "train_seconds": 600.0,
            "train_images_per_second": 100.0 if name == "unet" else 80.0,
            "shapes": {"overall": 0.1, "tasks": {"colors": 0.3}}, "fid": 13.0, "kid": 0.2,
            "precision": 0.9, "recall": 0.3, "seconds_per_image": 0.1,
        })  # fmt: skip
    stored = {"command": "python benchmarks/architectures.py --compare unet-dit", "machine": "m",
              "date": "2026-01-01", "seconds": 60.0, "budget_minutes": 20.0, "steps": 390,
              "batch_size": 128, "fid_images": 500, "runs": str(runs), "results": results}  # fmt: skip
    (tmp_path / "unet_vs_dit.json").write_text(json.dumps(stored))
    argv = ["architectures.py", "--compare", "unet-dit", "--report-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--report-only"])
    load_benchmark("architectures").main()
    text = (tmp_path / "unet_vs_dit.md").read_text()
    assert "Command: `python benchmarks/architectures.py --compare unet-dit`" in text
    assert "(1.25x)" in text  # 100 / 80 images/s
    # the last 20 logged losses averaged: loss + mean(1 / i) for i = 20..39
    tail = sum(1 / i for i in range(20, 40)) / 20
    assert f"unet {0.05 + tail:.4f}, dit {0.06 + tail:.4f}" in text
    assert (tmp_path / "unet_vs_dit.png").is_file()


def test_few_step_report_checks_the_targets_and_reads_the_distillation_costs(
    load_benchmark, tmp_path
):
    import json
    from types import SimpleNamespace

    few_step = load_benchmark("few_step")

    def row(method, steps, shapes, fid, stderr=0.01):
        return {"method": method, "steps": steps, "fid": fid, "seconds_per_image": 0.01 * steps,
                "shapes": {"overall": shapes, "overall_stderr": stderr}}  # fmt: skip

    results = [row("teacher (reference)", 50, 0.40, 4.0), row("teacher ddim", 4, 0.30, 6.0),
               row("LCM", 4, 0.39, 5.0), row("progressive", 4, 0.35, 7.0),
               row("LCM-LoRA", 4, 0.20, 5.5), row("LCM", 2, 0.30, 6.0),
               row("multistep CM", 4, 0.37, 5.2)]  # fmt: skip
    few_step.add_ratios(results)
    targets = {r["method"]: r for r in few_step.target_rows(results)}
    # the 4-step rows of the distilled models; the multistep CM is held to the LCM's 95%
    assert set(targets) == {"LCM", "progressive", "LCM-LoRA", "multistep CM"}
    assert targets["multistep CM"]["target"] == 0.95 and not targets["multistep CM"]["met"]
    assert targets["LCM"]["ratio"] == 0.39 / 0.40 and targets["LCM"]["met"]  # 0.975 >= 0.95
    assert not targets["progressive"]["met"]  # 0.875 < 0.90
    assert targets["LCM-LoRA"]["target"] is None and targets["LCM-LoRA"]["met"] is None
    assert (
        targets["progressive"]["beats_ddim_shapes"] and not targets["progressive"]["beats_ddim_fid"]
    )
    assert not targets["LCM-LoRA"]["beats_ddim_shapes"] and targets["LCM-LoRA"]["beats_ddim_fid"]
    # "clearly": by more than 2 SE of the difference, 2 * hypot(0.01, 0.01) = 0.028
    assert targets["LCM"]["beats_ddim_shapes_clearly"]  # 0.39 - 0.30
    assert targets["LCM-LoRA"]["beats_ddim_shapes_clearly"] is False
    # the ratio's 2 SE by the delta method: 2 * 0.975 * hypot(0.01 / 0.39, 0.01 / 0.40)
    expected = 2 * (0.39 / 0.40) * math.hypot(0.01 / 0.39, 0.01 / 0.40)
    assert math.isclose(targets["LCM"]["ratio_2se"], expected)
    close = [row("teacher (reference)", 50, 0.40, 4.0), row("teacher ddim", 4, 0.30, 6.0),
             row("progressive", 4, 0.32, 5.0)]  # fmt: skip
    few_step.add_ratios(close)
    (near,) = few_step.target_rows(close)
    assert near["beats_ddim_shapes"] and not near["beats_ddim_shapes_clearly"]  # 0.02 < 0.028
    assert "| yes, within the noise |" in "\n".join(few_step.targets_text([near]))

    progressive, lcm = tmp_path / "prog", tmp_path / "lcm"
    progressive.mkdir()
    (lcm / "pipeline").mkdir(parents=True)
    stages = {"guidance": {"steps": 100, "train_seconds": 60.0},
              "steps-2": {"steps": 50, "train_seconds": 30.0}}  # fmt: skip
    (progressive / "results.json").write_text(json.dumps({"stages": stages}))
    (lcm / "results.json").write_text(json.dumps({"steps": 300, "train_seconds": 600.0}))
    args = SimpleNamespace(progressive=str(progressive), lcm=str(lcm / "pipeline"),
                           lcm_lora="shapes-lora-by-name", multistep=None)  # fmt: skip
    costs = {c["method"]: c for c in few_step.distillation_costs(args)}
    assert set(costs) == {"progressive", "LCM"}  # a shipped name has no run folder to read
    assert (costs["progressive"]["updates"], costs["progressive"]["minutes"]) == (150, 1.5)
    assert (costs["LCM"]["updates"], costs["LCM"]["minutes"]) == (300, 10.0)
    text = "\n".join(
        few_step.targets_text(list(targets.values())) + few_step.costs_text(costs.values())
    )
    assert (
        f"| LCM | 0.975 | {expected:.3f} | 0.95 | yes | yes, clearly | yes |" in text
        and "guidance 100, steps-2 50" in text
    )


def test_few_step_add_refuses_a_report_measured_with_other_settings(load_benchmark, tmp_path):
    import json
    from types import SimpleNamespace

    import pytest

    few_step = load_benchmark("few_step")
    settings = {"teacher": "t", "guidance": 5.0, "images_per_prompt": 2, "prompts": 0,
                "fid_images": 1000}  # fmt: skip
    rows = [{"method": "teacher (reference)", "steps": 50}]
    (tmp_path / "few_step.json").write_text(
        json.dumps({"settings": settings, "commands": ["first"], "results": rows})
    )
    args = SimpleNamespace(add=True, report_dir=str(tmp_path), **settings)
    nothing = {"results": [], "commands": [], "costs": []}
    assert few_step.stored_report(args) == {"results": rows, "commands": ["first"], "costs": []}
    assert few_step.stored_report(SimpleNamespace(**{**vars(args), "add": False})) == nothing
    # a first --add, before any report: nothing stored yet (it measured everything, not crash)
    first = SimpleNamespace(**{**vars(args), "report_dir": str(tmp_path / "new")})
    assert few_step.stored_report(first) == nothing
    with pytest.raises(SystemExit, match="'images_per_prompt': 1"):
        few_step.stored_report(SimpleNamespace(**{**vars(args), "images_per_prompt": 1}))


def test_guidance_sweep_on_a_held_out_suite_without_fid(load_benchmark, tmp_path):
    """``--suite-seed N`` draws other prompts with the shipped task mix, and a sweep without FID
    (``--fid-images 0``) still writes its plot and says which weight wins beyond the noise."""
    import argparse
    from collections import Counter

    sweeps = load_benchmark("sampling_sweeps")
    args = argparse.Namespace(suite_seed=0, suite_stride=1)
    shipped = sweeps.sweep_suite(args)
    args.suite_seed = 1
    held_out = sweeps.sweep_suite(args)
    assert Counter(e["tag"] for e in held_out) == Counter(e["tag"] for e in shipped)
    assert [e["prompt"] for e in held_out] != [e["prompt"] for e in shipped]
    assert "held-out suite of seed 1" in sweeps.suite_name(args)

    def cell(w, overall):
        return {"guidance": w, "shapes": {"overall": overall, "tasks": {"colors": overall}}}

    counts = {"colors": 400}
    results = [cell(3.0, 0.50), cell(5.0, 0.80), cell(7.5, 0.78)]
    lines = sweeps.guidance_findings(results, counts)
    assert lines[0].endswith("its maximum is 0.800 at w = 5.")
    assert "w = 5 against w = 3: +0.300" in lines[1] and "beyond the noise" in lines[1]
    assert "w = 5 against w = 7.5: +0.020" in lines[2] and "within the noise" in lines[2]
    (single,) = sweeps.guidance_findings(results[1:2], counts)  # one weight: nothing to compare
    assert single.startswith("- One weight measured: ShapesEval overall 0.800 at w = 5 (2 SE = ")
    sweeps.plot_guidance(results, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


def test_guidance_interval_benchmark_pairs_images_and_writes_its_report(
    load_benchmark, tiny_pipeline, tmp_path, monkeypatch
):
    """The paired difference is computed per image against the first row (hand-made bits here),
    and a run on a tiny model writes the table with one row per interval."""
    import argparse
    import sys

    from difflab.eval.shapes import load_suite

    bench = load_benchmark("guidance_interval")
    tags = ["colors"] * 4 + ["position"] * 4
    reference = {"tags": tags, "passed": "11001100", "no_object": "00000000"}
    cell = {"tags": tags, "passed": "11111100", "no_object": "00000000"}
    diff, se = bench.paired_difference(cell, reference)
    # colours gains 2 of 4 (differences 0,0,1,1: mean 0.5, var 1/3 / 4), position none
    assert diff == 0.25 and math.isclose(se, math.sqrt(1 / 3 / 4) / 2)
    assert bench.paired_difference(reference, reference) == (0.0, 0.0)
    assert bench.parse_interval("all") is None and bench.parse_interval("0,600") == [0, 600]
    suite = load_suite()[:2]
    args = argparse.Namespace(
        model="tiny", sampler="ddim", steps=3, guidance=5.0, suite_seed=0, images_per_prompt=2,
        seed=0, batch_size=8, report_dir=str(tmp_path),
    )  # fmt: skip
    cells = [bench.measure(args, interval, tiny_pipeline, suite) for interval in (None, [0, 500])]
    assert len(cells[1]["passed"]) == 4 and set(cells[1]["no_object"]) <= {"0", "1"}
    monkeypatch.setattr(sys, "argv", ["guidance_interval.py", "--intervals", "all", "0,500"])
    text = bench.write_report(args, cells, 1.0).read_text()
    assert "| every step |" in text and "| 0 <= t <= 500 |" in text
    assert "- Guidance at 0 <= t <= 500 against every step: overall" in text


def test_decoder_swap_decodes_the_very_latents_the_model_sampled(
    load_benchmark, tiny_pipeline, monkeypatch
):
    """benchmarks/vae_decoder_swap.py: the latents it records are the ones the pipeline decoded
    (re-decoding them with the same VAE gives the same images), so the two decoders' scores are
    paired image by image; with the same VAE on both sides the difference is exactly zero."""
    import copy
    from types import SimpleNamespace

    import torch

    from difflab.eval.shapes import load_suite
    from difflab.eval.text_to_image import suite_images
    from difflab.pipelines.text_to_image import decode_latents

    swap = load_benchmark("vae_decoder_swap")
    suite = load_suite()[::40]
    pipeline = copy.copy(tiny_pipeline)  # the recorder patches this copy only
    recorded = swap.recording_decoder(pipeline)
    images, _, _ = suite_images(pipeline, suite, 2, steps=2, sampler="ddim", batch_size=5)
    assert sum(len(z) for z in recorded) == len(images) == 2 * len(suite)
    redecoded = torch.cat([decode_latents(tiny_pipeline.vae, z) for z in recorded])
    torch.testing.assert_close(redecoded, images, atol=1e-5, rtol=0)
    assert "decode" not in vars(tiny_pipeline)

    monkeypatch.setattr(swap, "load_model", lambda name: copy.copy(tiny_pipeline))
    args = SimpleNamespace(images_per_prompt=1, batch_size=8, fid_images=0, vae="same")
    row = swap.measure("tiny", tiny_pipeline.vae, args, suite, None)
    assert row["new"] == row["shipped"] and len(row["new"]["passed"]) == len(suite)
    assert swap.paired_difference(row["new"], row["shipped"]) == (0.0, 0.0)
    text = "\n".join(swap.report_lines(args, [row], 1.0, "python x"))
    assert text.count("| `tiny` |") == 2 and "| +0.000 (0.000) |" in text


def test_few_step_takes_shipped_models_and_adapters_by_name(load_benchmark):
    from types import SimpleNamespace

    few_step = load_benchmark("few_step")
    args = SimpleNamespace(teacher="shapes-t2i", lcm="shapes-t2i-lcm", multistep=None,
                           progressive=None, lcm_lora="shapes-t2i-lcm-lora")  # fmt: skip
    found = few_step.models(args)
    assert {"LCM", "LCM-LoRA"} <= set(found)
    sampler, guidance, _ = found["LCM-LoRA"](4).sampling_settings(None, None)
    assert (sampler, guidance) == ("lcm", 1.0)  # the adapter's settings: it is attached
