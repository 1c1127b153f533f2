"""The shapes world: palette, geometry, sampling, rendering, annotations and the dataset."""

import itertools
import json

import numpy as np
import pytest
import torch

from difflab.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    SceneConfig,
    ShapeObject,
    ShapesDataset,
    boxes,
    depth_order,
    masks,
    object_coverages,
    render,
    sample_scene,
    scene_from_dict,
    srgb_to_lab,
    to_numpy_image,
    to_tensor,
    visible_coverages,
)


def test_palette_is_perceptually_separated_from_itself_and_the_backgrounds():
    lab = {name: srgb_to_lab(np.array(rgb)) for name, rgb in {**COLOURS, **BACKGROUNDS}.items()}
    pairs = [
        (a, b)
        for a, b in itertools.combinations(lab, 2)
        if not (a in BACKGROUNDS and b in BACKGROUNDS)
    ]
    closest = min(np.linalg.norm(lab[a] - lab[b]) for a, b in pairs)
    assert len(COLOURS) >= 8 and len(SHAPES) >= 6 and len(SIZES) >= 2
    assert closest > 25.0  # CIELAB delta E


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_has_the_area_of_its_size_and_its_centroid_at_its_centre(shape):
    size = 256
    obj = ShapeObject(shape, "red", "large", (0.5, 0.5))
    coverage = object_coverages(Scene((obj,)), size)[0].astype(np.float64)
    area = coverage.sum() / size**2
    assert area == pytest.approx(np.pi * SIZES["large"] ** 2, rel=0.01)
    grid = (np.arange(size) + 0.5) / size
    assert (coverage.sum(0) * grid).sum() / coverage.sum() == pytest.approx(0.5, abs=0.002)
    assert (coverage.sum(1) * grid).sum() / coverage.sum() == pytest.approx(0.5, abs=0.002)
    # Anti-aliased: some edge pixels are partially covered.
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() > 0.5 * size * SIZES["large"]


def test_same_seed_same_scene_and_pixels_any_resolution():
    for seed in range(5):
        a = sample_scene(np.random.default_rng(seed))
        b = sample_scene(np.random.default_rng(seed))
        assert a == b
        for size in (16, 32, 64):
            image = render(a, size)
            assert image.shape == (size, size, 3) and image.dtype == np.float32
            assert np.array_equal(image, render(b, size))
            assert 0.0 <= image.min() and image.max() <= 1.0
    assert sample_scene(np.random.default_rng(0)) != sample_scene(np.random.default_rng(1))


def test_default_scenes_keep_objects_apart_inside_the_image():
    rng = np.random.default_rng(3)
    config = SceneConfig()
    counts = []
    for _ in range(200):
        scene = sample_scene(rng, config)
        counts.append(len(scene.objects))
        b = boxes(scene)
        assert (b[:, :2] >= config.margin - 1e-9).all() and (
            b[:, 2:] <= 1 - config.margin + 1e-9
        ).all()
        for p, q in itertools.combinations(b, 2):
            separated = (
                p[2] + config.margin <= q[0]
                or q[2] + config.margin <= p[0]
                or p[3] + config.margin <= q[1]
                or q[3] + config.margin <= p[1]
            )
            assert separated
        m = masks(scene, 32)
        assert m.sum(0).max() <= 1  # no pixel belongs to two objects
    assert set(counts) == {1, 2, 3, 4}


def test_masks_lie_in_boxes_and_colour_the_render():
    rng = np.random.default_rng(4)
    for _ in range(20):
        scene = sample_scene(rng, SceneConfig(texture_probability=0.0))
        image = render(scene, 64)
        for obj, mask, box in zip(scene.objects, masks(scene, 64), boxes(scene, 64), strict=True):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= np.floor(box[0]) and xs.max() < np.ceil(box[2])
            assert ys.min() >= np.floor(box[1]) and ys.max() < np.ceil(box[3])
            inside = np.nonzero(object_coverages(Scene((obj,)), 64)[0] == 1.0)
            assert np.allclose(image[inside], COLOURS[obj.colour], atol=1e-5)


def test_overlap_option_annotates_depth_and_occlusion():
    back = ShapeObject("square", "red", "large", (0.45, 0.5), depth=0)
    front = ShapeObject("circle", "blue", "large", (0.55, 0.5), depth=1)
    scene = Scene((back, front))
    assert depth_order(scene) == [0, 1]
    full, visible = object_coverages(scene, 64), visible_coverages(scene, 64)
    assert np.allclose(visible[1], full[1])  # the front object is whole
    assert visible[0].sum() < 0.9 * full[0].sum()  # the back one is partly hidden
    assert np.allclose(render(scene, 64)[32, 36], COLOURS["blue"], atol=1e-5)
    rng = np.random.default_rng(0)
    overlapping = [
        sample_scene(rng, SceneConfig(allow_overlap=True, min_objects=4)) for _ in range(30)
    ]
    assert any(masks(s, 32, visible=False).sum(0).max() > 1 for s in overlapping)


def test_config_errors_name_the_problem_and_the_valid_options():
    with pytest.raises(ValueError, match="unknown colour.*mauve.*valid colours are: red"):
        SceneConfig(colours=("red", "mauve"))
    with pytest.raises(ValueError, match="unknown shape.*blob.*circle"):
        SceneConfig(held_out=frozenset({("blob", "red")}))
    with pytest.raises(ValueError, match="count_weights"):
        SceneConfig(count_weights=(1.0,))
    with pytest.raises(ValueError, match="style"):
        render(sample_scene(np.random.default_rng(0)), 32, style="cubist")
    with pytest.raises(ValueError, match="unknown relation wording.*fancy.*grammar, plain"):
        ShapesDataset(4, relation_wording="fancy")
    with pytest.raises(ValueError, match=r"relation_probability .* in \[0, 1\]; got 1.5"):
        ShapesDataset(4, relation_probability=1.5)


def test_sampling_distribution_and_held_out_pairs():
    held = frozenset({("circle", "red"), ("star", "blue")})
    config = SceneConfig(
        held_out=held, count_weights=(0, 0, 1, 0), colour_weights=(1, 1) + (0,) * 8
    )
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(150):
        scene = sample_scene(rng, config)
        assert len(scene.objects) == 3
        seen |= {(o.shape, o.colour) for o in scene.objects}
    assert not seen & held
    assert {c for _, c in seen} == {"red", "orange"}


def test_scene_round_trips_through_json():
    scene = sample_scene(np.random.default_rng(9), SceneConfig(texture_probability=1.0))
    again = scene_from_dict(json.loads(json.dumps(scene.to_dict())))
    assert again == scene and np.array_equal(render(again, 32), render(scene, 32))


def test_tensor_conversion_is_in_minus_one_one_and_invertible():
    image = render(sample_scene(np.random.default_rng(2)), 32)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 32, 32) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.allclose(to_numpy_image(tensor), image, atol=1e-6)


def test_dataset_items_split_determinism_and_held_out():
    held = frozenset({("circle", c) for c in COLOURS if c != "red"})
    train = ShapesDataset(40, size=16, config=SceneConfig(held_out=held), seed=1)
    item = train[3]
    assert set(item) == {"image", "caption", "index"} and item["image"].shape == (3, 16, 16)
    assert (
        item["image"].min() >= -1 and item["image"].max() <= 1 and isinstance(item["caption"], str)
    )
    assert torch.equal(
        train[3]["image"],
        ShapesDataset(40, size=16, config=SceneConfig(held_out=held), seed=1)[3]["image"],
    )
    validation = ShapesDataset(
        40, size=16, split="validation", config=SceneConfig(held_out=held), seed=1
    )
    train_scenes = [train.scene_and_caption(i)[0] for i in range(40)]
    validation_scenes = [validation.scene_and_caption(i)[0] for i in range(40)]
    assert not set(train_scenes) & set(validation_scenes)
    assert all((o.shape, o.colour) not in held for s in train_scenes for o in s.objects)
    assert any((o.shape, o.colour) in held for s in validation_scenes for o in s.objects)
    loader = torch.utils.data.DataLoader(train, batch_size=8)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 16, 16) and len(batch["caption"]) == 8
    with pytest.raises(ValueError, match="unknown split"):
        ShapesDataset(4, split="test")
    with_scene = ShapesDataset(
        40, size=16, config=SceneConfig(held_out=held), seed=1, with_scene=True
    )[3]
    assert scene_from_dict(json.loads(with_scene["scene"])) == train.scene_and_caption(3)[0]


def test_dataset_caches_text_embeddings_once():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return torch.stack([torch.tensor([float(len(t)), float(sum(map(ord, t)))]) for t in texts])

    dataset = ShapesDataset(30, size=16, embed_fn=embed, embed_batch_size=8)
    embedded = [t for call in calls for t in call]
    assert len(embedded) == len(set(embedded)) and all(len(call) <= 8 for call in calls)
    for i in (0, 7, 29):
        item = dataset[i]
        assert item["text_embedding"][0] == len(item["caption"])
    assert len(calls) == -(-len(embedded) // 8)  # no further calls while reading items
