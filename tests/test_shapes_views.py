"""Derived views: control maps, layouts, edits, the subject and styles, clips, multi-view solids."""

import numpy as np
import pytest

from difflab.data.shapes import (
    COLOURS,
    SHAPES,
    STYLES,
    Scene,
    ShapeObject,
    masks,
    render,
)
from difflab.data.shapes_3d import (
    SOLIDS,
    camera_pose,
    camera_rays,
    focal_length,
    multiview,
    orbit_poses,
    render_solid,
)
from difflab.data.shapes_views import (
    EDIT_KINDS,
    SUBJECT,
    box_layout,
    depth_map,
    edge_map,
    edit_triplet,
    layout_image,
    moving_clip,
    referring_phrase,
    render_clip,
    scribble_map,
    segmentation_image,
    segmentation_map,
    subject_scene,
)
from difflab.eval.shapes import detect

TWO = Scene(
    (
        ShapeObject("square", "red", "large", (0.3, 0.3)),
        ShapeObject("circle", "blue", "small", (0.7, 0.7), depth=1),
    )
)


def test_edges_follow_the_outlines_only():
    edges = edge_map(TWO, 64)
    inside = masks(TWO, 64)
    eroded = (
        inside
        & np.roll(inside, 2, 1)
        & np.roll(inside, -2, 1)
        & np.roll(inside, 2, 2)
        & np.roll(inside, -2, 2)
    )
    assert edges.shape == (64, 64) and edges.max() == pytest.approx(1.0)
    assert (
        edges[eroded.any(0)].max() < 0.05 and edges[0:5].max() == 0
    )  # not inside, not on background
    perimeter_px = 4 * 0.13 * 2 * 0.886 * 64 + 2 * np.pi * 0.085 * 64
    assert (edges > 0.5).sum() == pytest.approx(2 * perimeter_px, rel=0.25)  # about two pixels wide


def test_segmentation_maps_agree_with_masks_and_attributes():
    instance = segmentation_map(TWO, 32)
    assert set(np.unique(instance)) == {0, 1, 2}
    assert np.array_equal(instance == 1, masks(TWO, 32)[0])
    by_shape, by_colour = segmentation_map(TWO, 32, "shape"), segmentation_map(TWO, 32, "colour")
    assert set(np.unique(by_shape)) == {0, SHAPES.index("square") + 1, SHAPES.index("circle") + 1}
    assert set(np.unique(by_colour)) == {
        0,
        list(COLOURS).index("red") + 1,
        list(COLOURS).index("blue") + 1,
    }
    image = segmentation_image(instance)
    assert (
        image.shape == (32, 32, 3) and len({tuple(image[instance == k][0]) for k in (0, 1, 2)}) == 3
    )
    with pytest.raises(ValueError, match="valid kinds are: instance"):
        segmentation_map(TWO, 32, "depth")


def test_depth_map_orders_overlapping_objects():
    back = ShapeObject("square", "red", "large", (0.45, 0.5), depth=0)
    front = ShapeObject("circle", "blue", "large", (0.55, 0.5), depth=1)
    depth = depth_map(Scene((back, front)), 64)
    assert (
        depth[32, 36] == pytest.approx(1.0)
        and depth[32, 22] == pytest.approx(0.5)
        and depth[2, 2] == 0.0
    )


def test_scribbles_are_random_strokes_near_the_outlines():
    a = scribble_map(TWO, 64, np.random.default_rng(0))
    b = scribble_map(TWO, 64, np.random.default_rng(1))
    assert not np.array_equal(a, b) and np.array_equal(
        a, scribble_map(TWO, 64, np.random.default_rng(0))
    )
    near = edge_map(TWO, 64) > 0
    for _ in range(3):
        near = (
            near
            | np.roll(near, 1, 0)
            | np.roll(near, -1, 0)
            | np.roll(near, 1, 1)
            | np.roll(near, -1, 1)
        )
    assert (a > 0.5).sum() > 40 and (a[~near] > 0.5).mean() < 0.1


def test_box_layout_and_its_image():
    layout = box_layout(TWO)
    assert [item["phrase"] for item in layout] == ["a red square", "a blue circle"]
    assert layout[0]["box"] == pytest.approx(list(TWO.objects[0].box()))
    image = layout_image(TWO, 64)
    x0, y0, x1, y1 = (np.array(layout[0]["box"]) * 64).astype(int)
    row = image[(y0 + y1) // 2]
    assert (
        np.abs(row[x0 - 1 : x0 + 2] - COLOURS["red"]).sum(-1).min() < 0.5
    )  # the left side of the box
    assert np.allclose(row[(x0 + x1) // 2], 0.5)  # an outline, not a filled box


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_triplets_change_exactly_what_the_instruction_says(kind):
    rng = np.random.default_rng(11)
    for _ in range(5):
        edit = edit_triplet(rng, kind=kind)
        before, after = edit.before.objects, edit.after.objects
        assert edit.kind == kind and edit.before.background == edit.after.background
        if kind == "add":
            assert (
                len(after) == len(before) + 1
                and after[:-1] == before
                and edit.instruction.startswith("add a")
            )
            assert edit.instruction.endswith(after[-1].shape)
            continue
        if kind == "remove":
            assert len(after) == len(before) - 1 and set(after) < set(before)
            (gone,) = set(before) - set(after)
            assert edit.instruction.endswith(referring_phrase(edit.before, before.index(gone)))
            continue
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(changed) == 1
        a, b = changed[0]
        assert referring_phrase(edit.before, before.index(a)) in edit.instruction
        if kind == "recolour":
            assert (
                b.colour != a.colour
                and edit.instruction.endswith(b.colour)
                and (a.shape, a.centre) == (b.shape, b.centre)
            )
        elif kind == "reshape":
            assert (
                b.shape != a.shape and edit.instruction.endswith(b.shape) and a.centre == b.centre
            )
        else:
            assert a.centre != b.centre and edit.instruction.startswith("move")
            dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
            expected = (
                "to the left"
                if dx < 0
                else "to the right"
                if dx > 0
                else "up"
                if dy < 0
                else "down"
            )
            assert edit.instruction.endswith(expected)
    with pytest.raises(ValueError, match="valid kinds are"):
        edit_triplet(rng, kind="explode")


def test_subject_has_its_texture_and_styles_differ():
    scene = subject_scene(np.random.default_rng(0))
    subject = [o for o in scene.objects if o.texture == "dots"]
    assert len(subject) == 1 and (subject[0].shape, subject[0].colour) == (
        SUBJECT.shape,
        SUBJECT.colour,
    )
    pictures = {style: render(scene, 64, style) for style in STYLES}
    plain = render(
        Scene(
            tuple(
                o
                if o.texture == "plain"
                else ShapeObject(o.shape, o.colour, o.size, o.centre, depth=o.depth)
                for o in scene.objects
            ),
            scene.background,
        ),
        64,
    )
    assert not np.array_equal(plain, pictures["flat"])  # the dots show
    for a in STYLES:
        for b in STYLES:
            assert a == b or np.abs(pictures[a] - pictures[b]).mean() > 0.003
    assert pictures["pastel"].mean() > pictures["flat"].mean()


def test_clip_moves_objects_at_constant_velocity_and_says_so():
    clip = moving_clip(np.random.default_rng(4), num_frames=6)
    frames = render_clip(clip, 32)
    assert frames.shape == (6, 32, 32, 3)
    for t, scene in enumerate(clip.frames):
        for obj, first, (vx, vy) in zip(
            scene.objects, clip.frames[0].objects, clip.velocities, strict=True
        ):
            assert obj.centre == pytest.approx((first.centre[0] + vx * t, first.centre[1] + vy * t))
            x0, y0, x1, y1 = obj.box()
            assert 0 <= x0 and x1 <= 1 and 0 <= y0 and y1 <= 1
    for obj, (vx, vy) in zip(clip.frames[0].objects, clip.velocities, strict=True):
        word = (
            "to the right"
            if vx > 0
            else "to the left"
            if vx < 0
            else "down"
            if vy > 0
            else "up"
            if vy < 0
            else "still"
        )
        assert f"{obj.colour} {obj.shape} " in clip.caption and word in clip.caption
    # The detector tracks the first object across frames.
    centres = [detect(f)[0].centre for f in frames] if len(clip.frames[0].objects) == 1 else None
    if centres:
        assert np.allclose(np.diff(np.array(centres), axis=0), clip.velocities[0], atol=0.01)


def test_cameras_and_multiview_renders_are_consistent():
    pose = camera_pose(0.3, 0.4, 3.0)
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)) and np.linalg.norm(
        pose[:3, 3]
    ) == pytest.approx(3.0)
    origins, dirs = camera_rays(pose, 9, focal_length(9))
    assert np.allclose(dirs[4, 4], -pose[:3, 3] / 3.0, atol=1e-6)  # the centre ray hits the origin
    views = multiview("cube", "red", num_views=4, size=24)
    assert views.images.shape == (4, 24, 24, 3) and views.poses.shape == (4, 4, 4)
    assert np.allclose(views.poses, orbit_poses(4))
    # The sphere's silhouette has the projected area the pinhole model predicts.
    _, alpha, depth = render_solid("sphere", "blue", pose, 64)
    f = focal_length(64)
    expected = np.pi * (f * 0.8 / np.sqrt(3.0**2 - 0.8**2)) ** 2
    assert alpha.sum() == pytest.approx(expected, rel=0.03)
    assert np.nanmin(np.where(np.isinf(depth), np.nan, depth)) == pytest.approx(3.0 - 0.8, abs=0.05)
    for solid in SOLIDS:
        assert 0.02 < render_solid(solid, "green", pose, 16)[1].mean() < 0.6
    with pytest.raises(ValueError, match="valid solids are"):
        multiview("teapot", "red")
