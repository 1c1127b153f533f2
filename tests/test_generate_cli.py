"""`difflab generate`, `models` and `export` as a user runs them."""

from dataclasses import asdict

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from difflab.cli import app
from difflab.generate import settings_from_png

runner = CliRunner()


def test_generate_writes_pngs_with_settings_and_reproduces_them(tiny_pipeline_folder, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "generate",
            "a red circle above a blue square",
            "two green stars",
            "--model",
            str(tiny_pipeline_folder),
            "--num-images",
            "2",
            "--steps",
            "4",
            "--sampler",
            "ddim",
            "--guidance",
            "3",
            "--seed",
            "40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 4 and (out / "grid.png").is_file()
    settings = settings_from_png(pngs[3])
    assert (
        settings.prompt,
        settings.seed,
        settings.steps,
        settings.sampler,
        settings.guidance,
    ) == ("two green stars", 41, 4, "ddim", 3.0)
    again = tmp_path / "again"
    result = runner.invoke(app, ["generate", "--from-png", str(pngs[3]), "--out", str(again)])
    assert result.exit_code == 0, result.output
    (reproduced,) = again.glob("*.png")
    assert Image.open(reproduced).tobytes() == Image.open(pngs[3]).tobytes()
    assert Image.open(pngs[2]).tobytes() != Image.open(pngs[3]).tobytes()


def test_generate_with_a_guidance_interval_records_and_reproduces_it(
    tiny_pipeline_folder, tmp_path
):
    base = ["generate", "a red circle", "--model", str(tiny_pipeline_folder), "--steps", "4"]
    result = runner.invoke(
        app, [*base, "--guidance-interval", "0,600", "--out", str(tmp_path / "limited")]
    )
    assert result.exit_code == 0, result.output
    (limited,) = (tmp_path / "limited").glob("*.png")
    assert settings_from_png(limited).guidance_interval == [0, 600]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "plain")])
    (plain,) = (tmp_path / "plain").glob("*.png")
    assert settings_from_png(plain).guidance_interval == "all"  # the folder names none
    # the steps above t = 600 (of 4 dpmpp_2m steps from t = 999) run unguided: another image
    assert Image.open(limited).tobytes() != Image.open(plain).tobytes()
    again = tmp_path / "again"
    result = runner.invoke(app, ["generate", "--from-png", str(limited), "--out", str(again)])
    assert result.exit_code == 0, result.output
    (reproduced,) = again.glob("*.png")
    assert Image.open(reproduced).tobytes() == Image.open(limited).tobytes()
    result = runner.invoke(app, [*base, "--guidance-interval", "600,0"])
    assert result.exit_code != 0 and "0 <= t_low <= t_high" in result.output


def test_a_folder_default_guidance_interval_applies_unless_a_call_names_another(
    tiny_pipeline, tmp_path
):
    """A folder's ``_difflab_sampling`` may name a guidance interval: calls that name none run
    it, PNGs record it, "all" guides at every step, and a PNG written before intervals existed
    replays with guidance at every step, as it was made."""
    from dataclasses import replace

    from difflab.generate import GenerationSettings, save_png
    from difflab.pipelines.text_to_image import TextToImagePipeline

    folder = tmp_path / "limited-model"
    replace(tiny_pipeline, defaults={"guidance_interval": [0, 500]}).save_pretrained(folder)
    pipe = TextToImagePipeline.from_pretrained(folder)
    assert pipe.guidance_interval_setting() == [0, 500]
    assert pipe.guidance_interval_setting("all") == "all"
    prompt, options = ["a red circle"], {"steps": 4, "seed": 3}
    default = pipe.latents(prompt, **options)
    assert torch.equal(default, pipe.latents(prompt, guidance_interval=(0, 500), **options))
    assert not torch.equal(default, pipe.latents(prompt, guidance_interval="all", **options))
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", *prompt, "--model", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (png,) = out.glob("*.png")
    assert settings_from_png(png).guidance_interval == [0, 500]
    old = tmp_path / "old.png"  # as written before the field existed
    record = asdict(GenerationSettings("a red circle", str(folder), steps=4))
    del record["guidance_interval"]
    save_png(Image.new("RGB", (4, 4)), old, record)
    assert settings_from_png(old).guidance_interval == "all"


def test_generate_adds_to_its_folder_and_replaces_nothing(tiny_pipeline_folder, tmp_path):
    """A rerun into the same folder, and --from-png into the folder that holds its source, keep
    every file already there: numbering goes on and the grid takes a free name."""
    out = tmp_path / "out"
    args = ["generate", "a red circle", "--model", str(tiny_pipeline_folder), "-n", "2",
            "--steps", "2", "--sampler", "ddim", "--out", str(out)]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert sorted(before) == ["000-a-red-circle-seed0.png", "001-a-red-circle-seed1.png",
                              "grid.png"]  # fmt: skip
    second = runner.invoke(app, [*args, "--seed", "5"])
    assert second.exit_code == 0, second.output
    assert {name: (out / name).read_bytes() for name in before} == before
    made = sorted(set(path.name for path in out.iterdir()) - set(before))
    assert made == ["002-a-red-circle-seed5.png", "003-a-red-circle-seed6.png", "grid-1.png"]
    assert all(str(out / name) in second.output for name in made)  # the grid's too
    source = out / "000-a-red-circle-seed0.png"
    again = runner.invoke(app, ["generate", "--from-png", str(source), "--out", str(out)])
    assert again.exit_code == 0, again.output
    (reproduced,) = set(out.iterdir()) - {out / name for name in [*before, *made]}
    assert reproduced.name == "004-a-red-circle-seed0.png"
    assert source.read_bytes() == before[source.name]
    assert Image.open(reproduced).tobytes() == Image.open(source).tobytes()


def test_unused_path_and_require_empty_folder(tmp_path):
    from difflab.storage import require_empty_folder, unused_path

    grid = tmp_path / "grid.png"
    assert unused_path(grid) == grid
    grid.write_bytes(b"x")
    (tmp_path / "grid-1.png").write_bytes(b"y")
    assert unused_path(grid) == tmp_path / "grid-2.png"
    require_empty_folder(tmp_path / "new", "--out")  # missing: fine
    (tmp_path / "empty").mkdir()
    require_empty_folder(tmp_path / "empty", "--out")
    with pytest.raises(ValueError, match="already holds files; pass a new or empty --out"):
        require_empty_folder(tmp_path, "--out")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        require_empty_folder(grid, "--images")


def test_generate_without_steps_takes_20_for_a_model_that_names_none(
    tiny_pipeline_folder, tmp_path
):
    """(A distilled model's folder names its own steps: see test_distill.)"""
    args = ["generate", "x", "--model", str(tiny_pipeline_folder), "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (png,) = tmp_path.glob("*.png")
    assert settings_from_png(png).steps == 20


def test_generate_bad_input(tiny_pipeline_folder, tmp_path):
    result = runner.invoke(
        app, ["generate", "x", "--model", str(tiny_pipeline_folder), "--sampler", "plms"]
    )
    assert result.exit_code != 0 and "unknown sampler 'plms'" in str(result.exception)
    result = runner.invoke(app, ["generate", "x", "--model", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "no model folder or shipped model" in str(result.exception)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    result = runner.invoke(app, ["generate", "--from-png", str(plain)])
    assert result.exit_code != 0 and "carries no difflab generation settings" in str(
        result.exception
    )
    result = runner.invoke(app, ["generate"])
    assert result.exit_code != 0 and "at least one prompt" in result.output
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    result = runner.invoke(app, ["generate", "--from-png", str(not_an_image)])
    assert result.exit_code != 0 and "is not an image" in str(result.exception)
    # 0 steps is an error, not "the default 20" (a `steps or default` slip once made it so)
    out = tmp_path / "zero-steps"
    args = [
        "generate",
        "x",
        "--model",
        str(tiny_pipeline_folder),
        "--steps",
        "0",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--steps must be at least 1" in result.output
    assert not out.exists()


def test_steps_zero_is_refused_by_the_library(tiny_pipeline):
    from difflab.generate import model_sampling

    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps must be a whole number of at least 1"):
            tiny_pipeline(["x"], steps=steps)
        with pytest.raises(ValueError, match="steps must be a whole number of at least 1"):
            model_sampling(tiny_pipeline, None, None, steps)
    assert model_sampling(tiny_pipeline, None, None, None)[2] == 20


def test_console_entry_prints_user_errors_without_a_traceback(
    tiny_pipeline_folder, monkeypatch, capsys
):
    from difflab.cli import main

    monkeypatch.delenv("DIFFLAB_TRACEBACK", raising=False)
    args = ["difflab", "generate", "x", "--model", str(tiny_pipeline_folder), "--sampler", "plms"]
    monkeypatch.setattr("sys.argv", args)
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith("error: unknown sampler 'plms'") and "Traceback" not in err
    monkeypatch.setenv("DIFFLAB_TRACEBACK", "1")
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        main()


def test_export_writes_a_complete_folder(tiny_pipeline_folder, tmp_path):
    from diffusers import DiffusionPipeline

    result = runner.invoke(app, ["export", str(tiny_pipeline_folder), str(tmp_path / "full")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "full" / "text_encoder" / "model.safetensors").is_file()
    assert (
        type(DiffusionPipeline.from_pretrained(tmp_path / "full")).__name__
        == "StableDiffusionPipeline"
    )
    result = runner.invoke(app, ["export", str(tiny_pipeline_folder), str(tmp_path / "full")])
    assert result.exit_code != 0 and "not empty" in result.output


def test_generate_suite_folder_scores_with_shapes_eval(tiny_pipeline, tmp_path):
    from difflab.eval.shapes import load_suite, score_folder
    from difflab.generate import generate_suite_folder

    suite = [e for e in load_suite() if e["tag"] == "single_object"][:3]
    count = generate_suite_folder(
        tiny_pipeline, tmp_path, suite, images_per_prompt=2, steps=2, progress=False
    )
    assert count == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["00000", "00001", "00002"]
    assert settings_from_png(tmp_path / "00002" / "1.png").seed == 2001
    suite_file = tmp_path / "suite.jsonl"
    import json

    suite_file.write_text("".join(json.dumps(e) + "\n" for e in suite))
    report = score_folder(tmp_path, suite_file)
    assert report["num_images"] == 6 and 0.0 <= report["overall"] <= 1.0


def test_eval_shapes_with_a_model_generates_then_scores(tiny_pipeline_folder, tmp_path):
    import json

    from difflab.eval.shapes import load_suite

    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(e) + "\n" for e in load_suite()[:2]))
    report = tmp_path / "report.json"
    args = [
        "eval",
        "shapes",
        "--model",
        str(tiny_pipeline_folder),
        "--prompts",
        str(suite),
        "--out",
        str(report),
        "--images-per-prompt",
        "2",
        "--steps",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["num_images"] == 4 and data["generation"]["steps"] == 2
    # what it did not name is the model's default, recorded as it ran
    assert (data["generation"]["sampler"], data["generation"]["guidance"]) == ("dpmpp_2m", 5.0)
    assert (tmp_path / "report-images" / "00001" / "1.png").is_file()
    result = runner.invoke(app, args)  # the image folder is not silently reused
    assert result.exit_code == 2 and "already holds files" in result.output
