"""Measuring a text-to-image model in one call (difflab.eval.text_to_image): the in-memory
ShapesEval agrees with scoring the same images from files, and a full evaluation of a tiny model
returns every figure the sweep benchmarks tabulate."""

import json

import numpy as np
import torch
from PIL import Image

from difflab.eval.shapes import load_suite, render_suite_folder, score_folder, score_images
from difflab.eval.text_to_image import Reference, evaluate_text_to_image, suite_images


def test_in_memory_scores_equal_folder_scores(tmp_path):
    suite = load_suite()[::12]  # every task, 29 prompts
    prompts = tmp_path / "suite.jsonl"

    prompts.write_text("".join(json.dumps(entry) + "\n" for entry in suite))
    render_suite_folder(tmp_path / "images", prompts, images_per_prompt=2)
    # spoil some images, so that both ways of scoring must also agree on failures
    files = sorted((tmp_path / "images").rglob("*.png"))
    for path in files[::3]:
        array = np.asarray(Image.open(path).convert("RGB")).copy()
        array[8:24, 8:24] = array[0, 0]
        Image.fromarray(array).save(path)
    from_files = score_folder(tmp_path / "images", prompts)
    tensors = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in files]
    )
    images = tensors.float() / 127.5 - 1
    indices = [int(p.parent.name) for p in files]
    in_memory = score_images(images, indices, suite)
    assert 0 < in_memory["overall"] < 1
    assert in_memory["overall"] == from_files["overall"]
    assert [r["passed"] for r in in_memory["results"]] == [
        r["passed"] for r in from_files["results"]
    ]


def test_suite_images_do_not_depend_on_the_batch(tiny_pipeline):
    suite = load_suite()[:5]
    options = {"steps": 3, "sampler": "ddim", "guidance": 3.0, "seed": 7}
    whole, indices, _ = suite_images(tiny_pipeline, suite, 2, batch_size=10, **options)
    parts, _, _ = suite_images(tiny_pipeline, suite, 2, batch_size=3, **options)
    assert indices == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert whole.shape == (10, 3, 32, 32)
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=0)


def test_evaluate_text_to_image_reports_every_figure(tiny_pipeline):
    suite = load_suite()[::30]
    reference = Reference.shapes(130)  # FID needs more images than its 128 features
    report = evaluate_text_to_image(
        tiny_pipeline, steps=2, sampler="ddim", guidance=2.0, suite=suite, reference=reference
    )
    assert report["num_images"] == {"shapes": len(suite), "distribution": 130}
    assert 0 <= report["shapes"]["overall"] <= 1 and report["shapes"]["tasks"]
    assert report["fid"] > 0 and 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert report["kid"] > 0 and report["kid_std"] > 0  # a tiny untrained model is far off
    assert report["seconds_per_image"] > 0
