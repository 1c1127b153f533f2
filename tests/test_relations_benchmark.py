"""benchmarks/relations.py: its verdicts agree with ground truth, and its caption changes and
shifted schedule are what its report says they are."""

import json
import sys

import numpy as np
import pytest
import torch

from difflab.data.shapes import render
from difflab.eval.shapes import Detection, detect, load_suite, scene_for_prompt
from difflab.eval.shapes_detector import as_float_image
from difflab.schedules import make_schedule, shifted_schedule


def box_detection(shape, colour, box):
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    return Detection(shape, colour, "medium", centre, box, (x1 - x0) * (y1 - y0), 0.0, 0.0)


def test_judge_tells_right_reversed_neither_and_undecided(load_benchmark):
    relations = load_benchmark("relations")
    circle = box_detection("circle", "red", (0.1, 0.4, 0.3, 0.6))
    square = box_detection("square", "blue", (0.6, 0.4, 0.8, 0.6))
    item = {"a": ("circle", "red"), "relation": "left of", "b": ("square", "blue")}
    assert relations.judge([circle, square], item) == "right"
    assert relations.judge([circle, square], {**item, "relation": "right of"}) == "reversed"
    assert relations.judge([circle, square], {**item, "relation": "above"}) == "neither"
    # shape-only names match any colour; two circles or a missing colour are not decisive
    assert relations.judge([circle, square], {**item, "a": ("circle", None)}) == "right"
    second = box_detection("circle", "green", (0.1, 0.1, 0.2, 0.2))
    assert relations.judge([circle, second, square], {**item, "a": ("circle", None)}) == (
        "not decisive"
    )
    assert relations.judge([circle, square], {**item, "b": ("square", "red")}) == "not decisive"


def test_ground_truth_renders_of_the_suite_position_prompts_are_judged_right(load_benchmark):
    relations = load_benchmark("relations")
    items = relations.suite_prompts()
    position = [e for e in load_suite() if e["tag"] == "position"]
    assert len(items) == len(position) == 100
    rng = np.random.default_rng(0)
    verdicts = []
    for entry, item in list(zip(position, items, strict=True))[::5]:
        assert item["prompt"] == entry["prompt"]
        image = render(scene_for_prompt(entry, rng), 32, "flat")
        verdicts.append(relations.judge(detect(as_float_image(image)), item))
    assert verdicts.count("right") >= 0.9 * len(verdicts), verdicts


def test_world_prompts_stay_in_their_world_and_cycle_the_relations(load_benchmark):
    relations = load_benchmark("relations")
    items = relations.world_prompts("circle", "red,blue", count=8)
    assert [i["relation"] for i in items] == ["left of", "right of", "above", "below"] * 2
    for item in items:
        assert {item["a"][1], item["b"][1]} == {"red", "blue"}
        assert item["a"][0] == item["b"][0] == "circle"
        assert item["prompt"].startswith(f"a {item['a'][1]} circle ")


def test_changed_captions_reverse_the_relation_or_replace_one_colour(load_benchmark):
    relations = load_benchmark("relations")
    scenes, texts = relations.changed_captions(12, "", "")
    assert len(scenes) == 12 and all(len(s.objects) == 2 for s in scenes)
    for true, reversed_, recoloured in zip(
        texts["true"], texts["relation reversed"], texts["colour replaced"], strict=True
    ):
        words = [w for w in relations.RELATION_WORDS if f" {w} " in true]
        phrase_of = {key: phrase for phrase, key in relations.RELATION_WORDS.items()}
        opposite = phrase_of[relations.REVERSED[relations.RELATION_WORDS[words[0]]]]
        assert reversed_ == true.replace(f" {words[0]} ", f" {opposite} ")
        assert sum(a != b for a, b in zip(true.split(), recoloured.split(), strict=True)) == 1


def test_shifted_schedule_moves_log_snr_by_minus_two_log_k(load_benchmark):
    from difflab.recipes.text_to_image import TextToImageRecipe

    relations = load_benchmark("relations")
    base = make_schedule("cosine", prediction_type="v_prediction")
    assert shifted_schedule(base, 1.0) is base
    moved = shifted_schedule(base, 4.0)
    inner = slice(1, 990)  # away from the capped betas at the ends
    assert torch.allclose(moved.log_snr[inner], base.log_snr[inner] - 2 * np.log(4.0), atol=1e-6)
    assert moved.prediction_type == "v_prediction" and moved.name == "cosine-shift4"
    options = TextToImageRecipe(schedule="cosine", prediction_type="v_prediction")
    focused = relations.focused_schedule(options, 4.0)
    assert torch.equal(focused.alphas_cumprod, moved.alphas_cumprod)
    with pytest.raises(ValueError, match="schedule shift must be positive"):
        shifted_schedule(base, 0.0)


def test_report_lists_every_stored_model_and_keeps_its_reading(
    load_benchmark, tmp_path, monkeypatch
):
    relations = load_benchmark("relations")
    counts = {"right": 9, "reversed": 7, "neither": 1, "not decisive": 3}
    levels = {str(t): (0.001, 0.0005) for t in relations.NOISE_LEVELS}
    stored = {
        "m": {
            "training": None, "suite": {**counts, "right_share": 0.5625, "right_share_2se": 0.25},
            "world": {**counts, "right_share": 0.5625, "right_share_2se": 0.25},
            "sensitivity": {"relation reversed": levels, "colour replaced": levels},
            "command": "`python benchmarks/relations.py --model m`", "seconds": 60.0,
        }
    }  # fmt: skip
    (tmp_path / "relations.json").write_text(json.dumps(stored))
    (tmp_path / "relations.md").write_text("old\n## Reading\nby hand\n")
    monkeypatch.setattr(
        sys, "argv", ["relations.py", "--report-only", "--report-dir", str(tmp_path)]
    )
    relations.main()
    text = (tmp_path / "relations.md").read_text()
    assert (
        "| m | the shapes world (shipped recipe) | suite position (shape only) | 9 | 7 | 1 | 3 |"
        in text
    )
    assert "0.56 ± 0.25" in text and "+1.00 ± 0.50" in text
    assert text.rstrip().splitlines()[-1].startswith("(This reading was written")
    assert "by hand" in text


def test_ideal_denoiser_is_the_posterior_mean_of_its_data(load_benchmark):
    relations = load_benchmark("relations")
    data = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    everywhere = torch.ones(1, 3, dtype=torch.float64)
    # little noise: x_t near a point returns that point; a caption it cannot have moves the
    # estimate to the nearest point that can have it
    alpha_bar = 0.999
    x_t = alpha_bar**0.5 * data[1:2] + 0.01
    assert torch.allclose(
        relations.ideal_x0(x_t, alpha_bar, data, everywhere), data[1:2], atol=1e-6
    )
    not_point_1 = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(
        relations.ideal_x0(x_t, alpha_bar, data, not_point_1), data[0:1], atol=1e-6
    )
    # all noise: the estimate is the caption-weighted mean of the data, whatever x_t is
    prior = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(
        relations.ideal_x0(torch.randn(1, 2, dtype=torch.float64), 1e-12, data, prior),
        torch.tensor([[3.0, 0.0]], dtype=torch.float64),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="no data point can have"):
        relations.ideal_x0(x_t, alpha_bar, data, torch.zeros(1, 3, dtype=torch.float64))


def test_caption_likelihood_is_positive_for_its_scene_and_zero_reversed(load_benchmark):
    relations = load_benchmark("relations")
    scenes, texts = relations.changed_captions(16, "circle", "red,blue")
    true = relations.caption_likelihoods(texts["true"], scenes)
    reversed_ = relations.caption_likelihoods(texts["relation reversed"], scenes)
    assert (true.diagonal() > 0).all() and (true <= 1).all()
    # the caption threshold is wider than the judge's, so a drawn relation never also holds
    # reversed for the same ordered pair
    assert (reversed_.diagonal() == 0).all()


def test_caption_change_effects_of_a_denoiser_that_ignores_the_caption_are_zero(load_benchmark):
    relations = load_benchmark("relations")
    schedule = make_schedule("scaled_linear")
    x0 = torch.randn(6, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    conditions = {"true": torch.zeros(6), "changed": torch.ones(6)}

    def ignores(x_t, t, alpha_bar, condition):
        return x_t * alpha_bar.sqrt()

    def reads(x_t, t, alpha_bar, condition):
        return x0 + condition.view(-1, 1, 1, 1)

    for estimate, increase in ((ignores, 0.0), (reads, 1.0)):
        out = relations.caption_change_effects(x0, schedule, conditions, estimate)
        for t in relations.NOISE_LEVELS:
            mean, se = out["sensitivity"]["changed"][t]
            assert mean == pytest.approx(increase, abs=1e-6) and se == pytest.approx(0, abs=1e-6)
    assert out["error"][999] == pytest.approx(0.0, abs=1e-12)  # "reads" is exact when true


def test_place_captions_name_where_the_lone_object_is_and_reverse_it(load_benchmark):
    from difflab.data.shapes_scene import absolute_position

    relations = load_benchmark("relations")
    scenes, texts = relations.place_captions(12)
    assert len(scenes) == 12
    for scene, true, reversed_ in zip(scenes, texts["true"], texts["place reversed"], strict=True):
        (thing,) = scene.objects
        place = absolute_position(thing)
        words = {"left": "on the left", "right": "on the right", "top": "at the top",
                 "bottom": "at the bottom"}  # fmt: skip
        assert true.endswith(words[place]) and thing.colour in true and thing.shape in true
        assert reversed_ == true.replace(words[place], words[relations.OPPOSITE_PLACE[place]])


def test_one_wording_names_a_relation_that_holds(load_benchmark):
    from difflab.data.shapes import scene_rng
    from difflab.data.shapes_captions import RELATION_WORDS
    from difflab.data.shapes_scene import relations_from_boxes, sample_scene

    relations = load_benchmark("relations")
    config = relations.scene_config("circle,square", "red,blue")
    kinds = set()
    for index in range(200):
        rng = scene_rng(0, "train", index)
        scene = sample_scene(rng, config)
        caption = relations.one_wording(scene, rng)
        a, b = scene.objects
        named = [(w, r) for r, w in RELATION_WORDS.items() if f" {w} " in caption]
        if (a.shape, a.colour) == (b.shape, b.colour):
            assert caption == f"two {a.colour} {a.shape}s"
            kinds.add("pair")
        elif not named:
            assert " and " in caption
            kinds.add("list")
        else:
            ((words, relation),) = named
            first, second = caption.split(f" {words} ")
            subject = next(o for o in scene.objects if first == f"a {o.colour} {o.shape}")
            other = b if subject is a else a
            assert second == f"a {other.colour} {other.shape}"
            assert relation in relations_from_boxes(subject.box(), other.box())
            kinds.add(relation)
    assert {"pair", "left of", "right of", "above", "below"} <= kinds


def test_init_starts_from_the_shipped_unet_and_its_own_schedule(load_benchmark):
    relations = load_benchmark("relations")
    import difflab

    unet, schedule = relations.trained_denoiser("shapes-t2i")
    pipeline = difflab.load_pipeline("shapes-t2i")
    assert schedule.prediction_type == pipeline.schedule.prediction_type == "epsilon"
    assert torch.allclose(schedule.alphas_cumprod, pipeline.schedule.alphas_cumprod)
    ours = unet.state_dict()
    theirs = pipeline.unet.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].dtype == torch.float32 for k in ours)
    assert all(torch.equal(ours[k], theirs[k].float()) for k in ours)


def test_init_refuses_a_schedule_of_its_own(load_benchmark, monkeypatch, capsys):
    relations = load_benchmark("relations")
    argv = ["relations.py", "--train", "x", "--init", "shapes-t2i", "--shift", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        relations.main()
    assert "--init keeps the model's own denoiser and noise schedule; drop --shift" in (
        capsys.readouterr().err
    )
