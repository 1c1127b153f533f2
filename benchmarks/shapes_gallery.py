"""Picture grids of the shapes world for ``docs/shapes.md`` (seeded, so they are reproducible).

Run from the repository root: ``python -m benchmarks.shapes_gallery``; writes PNGs into
``docs/images/``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

from difflab.data.shapes import (
    COLOURS,
    SHAPES,
    STYLES,
    Scene,
    ShapeObject,
    captions,
    render,
    sample_scene,
)
from difflab.data.shapes_3d import SOLIDS, multiview
from difflab.data.shapes_views import (
    box_layout,
    edge_map,
    edit_triplet,
    layout_image,
    moving_clip,
    render_clip,
    scribble_map,
    segmentation_image,
    segmentation_map,
    subject_scene,
)


def grid(
    axes_images, titles, path: Path, columns: int, tile: float = 1.6, fontsize: int = 7
) -> None:
    """Save images (``[H, W]`` or ``[H, W, 3]`` in [0, 1]) in a titled grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(axes_images) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * tile, rows * (tile + 0.35)), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, axes_images, titles, strict=False):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title("\n".join(textwrap.wrap(title, 26)), fontsize=fontsize)
    figure.tight_layout()
    figure.savefig(path, dpi=72)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    scenes = [sample_scene(rng) for _ in range(12)]
    grid(
        [render(s, 32) for s in scenes],
        [captions(s, rng, 1)[0] for s in scenes],
        args.out / "shapes_scenes.png",
        6,
    )

    vocabulary = [
        render(Scene((ShapeObject(shape, colour, "large", (0.5, 0.5)),)), 32)
        for shape in SHAPES
        for colour in COLOURS
    ]
    grid(
        vocabulary,
        [f"{c} {s}" for s in SHAPES for c in COLOURS],
        args.out / "shapes_vocabulary.png",
        len(COLOURS),
        tile=0.9,
        fontsize=5,
    )

    scene = sample_scene(rng)
    while len(scene.objects) < 3:
        scene = sample_scene(rng)
    sizes = [render(scene, s) for s in (16, 32, 64, 128)]
    grid(sizes, [f"{s} px" for s in (16, 32, 64, 128)], args.out / "shapes_resolutions.png", 4)

    views, titles = [], []
    for scene in [sample_scene(rng) for _ in range(3)]:
        views += [
            render(scene, 64),
            edge_map(scene, 64),
            segmentation_image(segmentation_map(scene, 64)),
            scribble_map(scene, 64, rng),
            layout_image(scene, 64),
        ]
        titles += [
            "image",
            "edges",
            "segmentation",
            "scribbles",
            "; ".join(item["phrase"] for item in box_layout(scene)),
        ]
    grid(views, titles, args.out / "shapes_views.png", 5)

    edits, titles = [], []
    for kind in ("recolour", "add", "remove", "reshape", "move", "recolour"):
        edit = edit_triplet(rng, kind=kind)
        edits += [render(edit.before, 48), render(edit.after, 48)]
        titles += ["before", edit.instruction]
    grid(edits, titles, args.out / "shapes_edits.png", 6)

    subject = subject_scene(rng)
    styled = [render(subject, 64, style) for style in STYLES] + [
        render(subject_scene(rng), 64) for _ in range(4)
    ]
    grid(
        styled,
        [*STYLES, "subject", "subject", "subject", "subject"],
        args.out / "shapes_subject.png",
        4,
    )

    frames, titles = [], []
    for solid, colour in zip(SOLIDS, ("red", "blue", "green", "orange"), strict=True):
        views = multiview(solid, colour, num_views=6, size=48)
        frames += list(views.images)
        titles += [f"{views.caption}, azimuth {60 * k}" for k in range(6)]
    grid(frames, titles, args.out / "shapes_multiview.png", 6, fontsize=6)

    clips, titles = [], []
    for _ in range(2):
        clip = moving_clip(rng, num_frames=6)
        clips += list(render_clip(clip, 32))
        titles += [clip.caption if t == 0 else f"frame {t}" for t in range(6)]
    grid(clips, titles, args.out / "shapes_clips.png", 6)


if __name__ == "__main__":
    main()
