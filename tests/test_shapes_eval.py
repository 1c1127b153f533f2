"""ShapesEval: detector accuracy, the suite format, the scoring rule, folders and the CLI."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from difflab.cli import app
from difflab.data.shapes import (
    SHAPES,
    Scene,
    SceneConfig,
    ShapeObject,
    all_captions,
    render,
    sample_scene,
    to_tensor,
    to_uint8,
)
from difflab.eval.shapes import (
    TASKS,
    build_default_suite,
    default_suite_path,
    detect,
    detector_accuracy,
    evaluate_detections,
    load_suite,
    scene_for_prompt,
    score_folder,
    summarise,
)


def test_detector_is_at_least_99_percent_right_per_attribute_on_clean_renders():
    rng = np.random.default_rng(2024)
    scenes = [sample_scene(rng) for _ in range(300)]
    accuracy = detector_accuracy(scenes, [render(s, 32) for s in scenes])
    for attribute in ("shape", "colour", "size", "count"):
        assert accuracy[attribute] >= 0.99, (attribute, accuracy)
    assert accuracy["centre_error_px"] < 0.25


@pytest.mark.parametrize(("kind", "level"), [("blur", 0.75), ("noise", 0.04), ("jpeg", 90)])
def test_detector_degrades_gracefully_under_mild_corruption(kind, level):
    from difflab.eval.shapes_detector import degrade

    rng = np.random.default_rng(31)
    scenes = [sample_scene(rng) for _ in range(80)]
    images = [
        degrade(render(s, 32), kind, level, np.random.default_rng(i)) for i, s in enumerate(scenes)
    ]
    accuracy = detector_accuracy(scenes, images)
    assert min(accuracy[a] for a in ("shape", "colour", "size")) >= 0.95, accuracy


def test_detector_reads_tensors_and_rotated_shapes():
    scene = Scene(
        (
            ShapeObject("star", "blue", "large", (0.3, 0.3), rotation=0.4),
            ShapeObject("heart", "pink", "small", (0.7, 0.7)),
        )
    )
    found = detect(to_tensor(render(scene, 64)), rotations=12)
    assert sorted((d.shape, d.colour, d.size) for d in found) == [
        ("heart", "pink", "small"),
        ("star", "blue", "large"),
    ]
    assert detect(np.full((32, 32, 3), 0.5)) == []
    with pytest.raises(ValueError, match="square"):
        detect(np.zeros((32, 40, 3)))


def test_shipped_suite_is_the_built_suite_and_covers_the_six_tasks():
    shipped = load_suite()
    assert shipped == build_default_suite()
    assert len(shipped) >= 300 and {e["tag"] for e in shipped} == set(TASKS)
    assert {c["shape"] for e in shipped for c in e["include"]} == set(SHAPES)


def test_ground_truth_of_the_suite_scores_at_least_99_percent_and_prompts_are_captions():
    suite = load_suite()
    results = []
    for index, entry in enumerate(suite):
        scene = scene_for_prompt(entry, np.random.default_rng([0, index]))
        assert entry["prompt"] in all_captions(scene)
        passed, reason = evaluate_detections(detect(render(scene, 32)), entry)
        results.append({"tag": entry["tag"], "passed": passed})
    report = summarise(results)
    assert report["overall"] >= 0.99 and not report["missing_tasks"]


def test_overall_stderr_is_the_binomial_error_of_the_task_mean():
    results = [{"tag": "single_object", "passed": p} for p in (True, True, False, False)]
    results += [{"tag": "colors", "passed": True}] * 2
    report = summarise(results)
    # single_object p = 1/2 over 4 images, colors p = 1 over 2: sqrt(1/4 / 4 + 0) / 2 tasks
    assert report["overall"] == 0.75
    assert report["overall_stderr"] == pytest.approx(0.125)


def _detections(*objects):
    return detect(render(Scene(tuple(objects)), 32))


def test_scoring_rule_counts_colours_positions_and_exclusions():
    counting = {
        "tag": "counting",
        "prompt": "two circles",
        "include": [{"shape": "circle", "count": 2}],
        "exclude": [{"shape": "circle", "count": 3}],
    }
    two = [
        ShapeObject("circle", "red", "small", (0.25, 0.3)),
        ShapeObject("circle", "blue", "small", (0.75, 0.3)),
    ]
    three = [*two, ShapeObject("circle", "green", "small", (0.5, 0.75))]
    assert evaluate_detections(_detections(*two), counting) == (True, "")
    assert evaluate_detections(_detections(*three), counting)[0] is False
    assert evaluate_detections(_detections(two[0]), counting)[1].startswith(
        "include[0]: expected 2 circle"
    )
    colour = {
        "tag": "colors",
        "prompt": "a blue circle",
        "include": [{"shape": "circle", "count": 1, "colour": "blue"}],
        "exclude": [],
    }
    assert evaluate_detections(_detections(two[0]), colour)[0] is False
    assert evaluate_detections(_detections(*two), colour)[0] is True
    position = {
        "tag": "position",
        "prompt": "a circle to the left of a square",
        "include": [
            {"shape": "square", "count": 1},
            {"shape": "circle", "count": 1, "position": ["left of", 0]},
        ],
        "exclude": [],
    }
    left = [
        ShapeObject("circle", "red", "small", (0.2, 0.5)),
        ShapeObject("square", "blue", "small", (0.8, 0.5)),
    ]
    right = [
        ShapeObject("circle", "red", "small", (0.8, 0.5)),
        ShapeObject("square", "blue", "small", (0.2, 0.5)),
    ]
    assert evaluate_detections(_detections(*left), position)[0] is True
    assert "not left of" in evaluate_detections(_detections(*right), position)[1]


def test_suite_errors_name_the_line_and_the_fix(tmp_path):
    good = json.dumps(
        {
            "tag": "colors",
            "prompt": "a red circle",
            "include": [{"shape": "circle", "count": 1, "colour": "red"}],
        }
    )
    for bad, message in (
        ("{not json", "line 2: not valid JSON"),
        (
            json.dumps({"tag": "colours", "prompt": "x", "include": [{"shape": "circle"}]}),
            "line 2: unknown tag 'colours'; valid tags are: single_object",
        ),
        (
            json.dumps({"tag": "colors", "prompt": "x", "include": [{"shape": "blob"}]}),
            "line 2: include\\[0\\] has shape 'blob'; valid shapes are: circle",
        ),
        (
            json.dumps(
                {
                    "tag": "colors",
                    "prompt": "x",
                    "include": [{"shape": "circle", "colour": "mauve"}],
                }
            ),
            "valid colours are",
        ),
        (
            json.dumps(
                {
                    "tag": "position",
                    "prompt": "x",
                    "include": [{"shape": "circle", "position": ["left of", 0]}],
                }
            ),
            "earlier include clause",
        ),
        (json.dumps({"prompt": "x", "include": []}), "line 2: missing key 'tag'"),
    ):
        path = tmp_path / "suite.jsonl"
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(ValueError, match=message):
            load_suite(path)
    # GenEval's spelling ("class", "color") is accepted.
    path.write_text(
        json.dumps(
            {
                "tag": "colors",
                "prompt": "a red circle",
                "include": [{"class": "circle", "count": 1, "color": "red"}],
            }
        )
        + "\n"
    )
    assert load_suite(path)[0]["include"] == [{"shape": "circle", "count": 1, "colour": "red"}]


def test_folder_layouts_cli_and_report(tmp_path):
    full = build_default_suite()
    suite = [next(e for e in full if e["tag"] == tag) for tag in TASKS]  # one prompt per task
    prompts = tmp_path / "suite.jsonl"
    prompts.write_text("".join(json.dumps(e) + "\n" for e in suite))
    images = tmp_path / "images"
    for index, entry in enumerate(suite):
        (images / f"{index:05d}" / "samples").mkdir(parents=True)
        for k in range(2):
            scene = scene_for_prompt(entry, np.random.default_rng([index, k]))
            Image.fromarray(to_uint8(render(scene, 32))).save(
                images / f"{index:05d}" / "samples" / f"{k}.png"
            )
    # A wrong image listed through metadata.jsonl (the other layout) for the "a circle" prompt.
    wrong = Scene((ShapeObject("star", "red", "large", (0.5, 0.5)),))
    assert suite[0]["prompt"] == "a circle"
    Image.fromarray(to_uint8(render(wrong, 32))).save(images / "extra.png")
    (images / "metadata.jsonl").write_text(
        json.dumps({"file_name": "extra.png", "prompt": "a circle"}) + "\n"
    )
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        ["eval", "shapes", "--images", str(images), "--prompts", str(prompts), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "position" in result.output
    report = json.loads(out.read_text())
    assert (
        report["num_images"] == 13
        and set(report["tasks"]) == set(TASKS)
        and report["difflab_version"]
    )
    assert report["tasks"]["single_object"] == {
        "score": pytest.approx(2 / 3),
        "passed": 2,
        "total": 3,
    }
    assert report["overall"] == pytest.approx(np.mean([2 / 3, 1, 1, 1, 1, 1]))
    failed = [r for r in report["results"] if not r["passed"]]
    assert [r["file"] for r in failed] == ["extra.png"] and failed[0]["detections"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images found.*sub-folder named by its 0-based"):
        score_folder(empty, prompts)
    result = CliRunner().invoke(
        app, ["eval", "shapes", "--images", str(empty), "--prompts", str(prompts)]
    )
    assert result.exit_code == 2 and "no images found" in result.output


def test_prompts_with_held_out_pairs():
    from difflab.eval.shapes import prompts_with_pairs

    chosen = prompts_with_pairs(load_suite(), {("circle", "blue")})
    assert chosen and all(
        any((c["shape"], c.get("colour")) == ("circle", "blue") for c in e["include"])
        for e in chosen
    )
    assert any(e["prompt"] == "a blue circle" for e in chosen)


def test_default_suite_path_is_packaged():
    assert default_suite_path().name == "shapes_default.jsonl" and default_suite_path().is_file()
    assert (
        scene_for_prompt(
            load_suite()[0], np.random.default_rng(0), SceneConfig(texture_probability=1.0)
        ).background.texture
        != "plain"
    )


def test_render_commands_write_images_with_their_parameters(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["shapes", "render", "--out", str(tmp_path / "scenes"), "-n", "3", "--size", "16"]
    )
    assert result.exit_code == 0, result.output
    rows = [
        json.loads(line)
        for line in (tmp_path / "scenes" / "metadata.jsonl").read_text().splitlines()
    ]
    assert [r["file_name"] for r in rows] == ["00000.png", "00001.png", "00002.png"]
    with Image.open(tmp_path / "scenes" / "00001.png") as image:
        assert (
            image.size == (16, 16) and json.loads(image.text["difflab"])["text"] == rows[1]["text"]
        )
    result = runner.invoke(app, ["shapes", "render", "--out", str(tmp_path / "scenes")])
    assert result.exit_code == 2 and "already holds files" in result.output
    assert len(list((tmp_path / "scenes").glob("*.png"))) == 3  # refused, nothing replaced
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(e) + "\n" for e in build_default_suite()[:3]))
    result = runner.invoke(
        app,
        [
            "shapes",
            "suite",
            "--out",
            str(tmp_path / "gt"),
            "--prompts",
            str(suite),
            "--images-per-prompt",
            "2",
        ],
    )
    assert result.exit_code == 0 and sorted(p.name for p in (tmp_path / "gt").iterdir()) == [
        "00000",
        "00001",
        "00002",
    ]
    assert score_folder(tmp_path / "gt", suite)["overall"] == 1.0
