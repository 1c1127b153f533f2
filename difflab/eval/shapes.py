"""ShapesEval: GenEval's object-focused evaluation (Ghosh et al. 2023) on the shapes world.

A *suite* is a jsonl file in GenEval's metadata form, adapted to shapes. Each line is::

    {"tag": "position", "prompt": "a circle to the left of a square",
     "include": [{"shape": "square", "count": 1},
                 {"shape": "circle", "count": 1, "position": ["left of", 0]}],
     "exclude": []}

``tag`` is one of :data:`TASKS`. An ``include`` clause holds when at least ``count`` detected
objects have that ``shape`` (and ``colour``, if given); with ``position: [relation, j]`` each of
the first ``count`` of them (largest first) must stand in ``relation`` to every object matched by
include clause ``j`` (GenEval's box-centre rule, threshold 0.1). An ``exclude`` clause fails the
image when at least ``count`` such objects are detected. An image passes if every clause holds;
a task's score is the fraction of its images that pass; the overall score is the unweighted mean
of the task scores. (Unlike GenEval, a colour clause counts objects of that shape *and* colour,
rather than colour-classifying the most confident detections of the shape.)

The prompts are captions of :mod:`difflab.data.shapes_captions`, so a text-to-image model trained
on the grammar's captions is evaluated on sentences of the same language.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from difflab.data.shapes_captions import Phrase, list_text, phrase_text, relation_text
from difflab.data.shapes_geometry import COLOURS, SHAPES
from difflab.data.shapes_scene import (
    RELATIONS,
    Scene,
    SceneConfig,
    place_objects,
    relations_between,
    relations_from_boxes,
    sample_attributes,
    sample_background,
)
from difflab.eval.shapes_detector import (
    Detection,
    as_float_image,
    detect,
    detector_accuracy,
    match_detections,
)

__all__ = [
    "TASKS", "Detection", "build_default_suite", "collect_images", "default_suite_path", "detect",
    "detector_accuracy", "evaluate_detections", "format_report_table", "load_suite", "match_detections",
    "prompts_with_pairs", "render_suite_folder", "scene_for_prompt", "score_folder", "score_image",
    "score_images", "summarise",
    "validate_suite_entry",
]  # fmt: skip

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Ground-truth scenes for position prompts keep a clearer separation than the evaluation needs.
GROUND_TRUTH_RELATION_THRESHOLD = 0.3


def default_suite_path() -> Path:
    """Path of the suite shipped with difflab (``difflab/eval/suites/shapes_default.jsonl``)."""
    return Path(str(resources.files("difflab.eval") / "suites" / "shapes_default.jsonl"))


def _clause_error(clause: object, where: str, n_include: int | None) -> str | None:
    if not isinstance(clause, dict):
        return f'{where} must be an object like {{"shape": "circle", "count": 1}}, got {clause!r}'
    shape = clause.get("shape", clause.get("class"))
    if shape not in SHAPES:
        return f"{where} has shape {shape!r}; valid shapes are: {', '.join(SHAPES)}"
    count = clause.get("count", 1)
    if not isinstance(count, int) or count < 1:
        return f"{where} has count {count!r}; it must be a positive integer"
    colour = clause.get("colour", clause.get("color"))
    if colour is not None and colour not in COLOURS:
        return f"{where} has colour {colour!r}; valid colours are: {', '.join(COLOURS)}"
    position = clause.get("position")
    if position is not None:
        if n_include is None:
            return f"{where}: exclude clauses cannot have a position"
        ok = isinstance(position, list | tuple) and len(position) == 2 and position[0] in RELATIONS
        if not ok or not isinstance(position[1], int) or not 0 <= position[1] < n_include:
            return f"{where} has position {position!r}; expected [relation, index of an earlier include clause] with relation in {list(RELATIONS)}"
    return None


def validate_suite_entry(entry: object, line: int) -> dict:
    """Check one suite line and return it normalised (``colour``/``shape`` spelling, defaults).

    Raises ``ValueError`` naming ``line`` (1-based) and what to fix.
    """
    if not isinstance(entry, dict):
        raise ValueError(
            f"line {line}: expected a JSON object with tag, prompt, include, got {type(entry).__name__}"
        )
    for key in ("tag", "prompt", "include"):
        if key not in entry:
            raise ValueError(
                f"line {line}: missing key {key!r} (each line needs tag, prompt, include and optional exclude)"
            )
    if entry["tag"] not in TASKS:
        raise ValueError(
            f"line {line}: unknown tag {entry['tag']!r}; valid tags are: {', '.join(TASKS)}"
        )
    include, exclude = entry["include"], entry.get("exclude", [])
    if not isinstance(include, list) or not include or not isinstance(exclude, list):
        raise ValueError(f"line {line}: include must be a non-empty list and exclude a list")
    for k, clause in enumerate(include):
        error = _clause_error(clause, f"line {line}: include[{k}]", k)
        if error:
            raise ValueError(error)
    for k, clause in enumerate(exclude):
        error = _clause_error(clause, f"line {line}: exclude[{k}]", None)
        if error:
            raise ValueError(error)

    def normal(clause: dict) -> dict:
        out = {"shape": clause.get("shape", clause.get("class")), "count": clause.get("count", 1)}
        colour = clause.get("colour", clause.get("color"))
        if colour is not None:
            out["colour"] = colour
        if clause.get("position") is not None:
            out["position"] = [clause["position"][0], clause["position"][1]]
        return out

    return {
        "tag": entry["tag"],
        "prompt": str(entry["prompt"]),
        "include": [normal(c) for c in include],
        "exclude": [normal(c) for c in exclude],
    }


def load_suite(path: str | Path | None = None) -> list[dict]:
    """Read and validate a suite jsonl (default: the shipped suite).

    Errors name the file's 1-based line number; blank lines are skipped, so an entry's prompt
    index (used by image folders) is its 0-based position among the non-blank lines.
    """
    path = Path(path) if path is not None else default_suite_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt file {path} does not exist; pass a jsonl suite such as {default_suite_path()}"
        )
    entries = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}, line {number}: not valid JSON ({error.msg}); each line must be one JSON object"
            ) from None
        try:
            entries.append(validate_suite_entry(entry, number))
        except ValueError as error:
            raise ValueError(f"{path}, {error}") from None
    if not entries:
        raise ValueError(f"{path} holds no prompts; expected one JSON object per line")
    return entries


def _matches(detection: Detection, clause: dict) -> bool:
    return (
        detection.shape == clause["shape"]
        and clause.get("colour", detection.colour) == detection.colour
    )


def evaluate_detections(detections: list[Detection], entry: dict) -> tuple[bool, str]:
    """GenEval's rule applied to detections: ``(passed, reason)``; reason is "" when passed."""
    matched: list[list[Detection]] = []
    for k, clause in enumerate(entry["include"]):
        found = [d for d in detections if _matches(d, clause)][: clause["count"]]
        what = " ".join(filter(None, [clause.get("colour"), clause["shape"]]))
        if len(found) < clause["count"]:
            return False, f"include[{k}]: expected {clause['count']} {what}, found {len(found)}"
        if "position" in clause:
            relation, target = clause["position"]
            for a, b in itertools.product(found, matched[target]):
                if relation not in relations_from_boxes(a.box, b.box):
                    return (
                        False,
                        f"include[{k}]: {what} at {a.centre[0]:.2f},{a.centre[1]:.2f} is not {relation} include[{target}]",
                    )
        matched.append(found)
    for k, clause in enumerate(entry.get("exclude", [])):
        n = sum(_matches(d, clause) for d in detections)
        if n >= clause["count"]:
            return (
                False,
                f"exclude[{k}]: found {n} {clause.get('colour', '')} {clause['shape']}".replace(
                    "  ", " "
                ),
            )
    return True, ""


def prompts_with_pairs(
    suite: list[dict], pairs: frozenset[tuple[str, str]] | set[tuple[str, str]]
) -> list[dict]:
    """The suite entries that ask for at least one of the ``(shape, colour)`` ``pairs``: score a
    model trained with ``SceneConfig(held_out=pairs)`` on them to measure compositional
    generalisation (and on the others for comparison)."""
    return [e for e in suite if any((c["shape"], c.get("colour")) in pairs for c in e["include"])]


def summarise(results: list[dict]) -> dict:
    """Task scores (fraction passed), the overall unweighted mean over tasks with images, and
    that mean's standard error ``overall_stderr`` = sqrt(sum_k p_k (1 - p_k) / n_k) / K over the
    K tasks (binomial per task, images independent - with several images per prompt they are
    not quite, so it is then a lower bound): differences under ~2 of it are noise."""
    tasks = {}
    for tag in TASKS:
        rows = [r for r in results if r["tag"] == tag]
        if rows:
            passed = sum(r["passed"] for r in rows)
            tasks[tag] = {"score": passed / len(rows), "passed": passed, "total": len(rows)}
    overall = float(np.mean([t["score"] for t in tasks.values()])) if tasks else 0.0
    variance = sum(t["score"] * (1 - t["score"]) / t["total"] for t in tasks.values())
    return {
        "overall": overall,
        "overall_stderr": float(np.sqrt(variance) / len(tasks)) if tasks else 0.0,
        "tasks": tasks,
        "missing_tasks": [t for t in TASKS if t not in tasks],
    }


def format_report_table(report: dict) -> str:
    """A plain-text table of the task scores and the overall score."""
    lines = [f"{'task':<14} {'score':>7} {'passed':>8}"]
    for tag in TASKS:
        task = report["tasks"].get(tag)
        lines.append(
            f"{tag:<14} {task['score']:>7.3f} {task['passed']:>4}/{task['total']:<4}"
            if task
            else f"{tag:<14} {'-':>7}"
        )
    lines.append(f"{'overall':<14} {report['overall']:>7.3f}")
    return "\n".join(lines)


# ---- the default suite and its ground truth ----------------------------------------------------


def build_default_suite(seed: int = 0) -> list[dict]:
    """The shipped suite (347 prompts over the six tasks), rebuilt deterministically from ``seed``.

    single_object: every shape, two phrasings; two_object: every ordered pair of shapes;
    counting: 2-4 of every shape (with an exclude on one more); colors: every shape-colour pair;
    position and color_attr: 100 random draws each.
    """
    rng = np.random.default_rng(seed)
    colours = tuple(COLOURS)
    suite: list[dict] = []
    for variant, shape in itertools.product((0, 1), SHAPES):
        suite.append(
            {
                "tag": "single_object",
                "prompt": phrase_text(Phrase(shape), variant),
                "include": [{"shape": shape, "count": 1}],
                "exclude": [],
            }
        )
    for a, b in itertools.permutations(SHAPES, 2):
        suite.append(
            {
                "tag": "two_object",
                "prompt": list_text([Phrase(a), Phrase(b)]),
                "include": [{"shape": a, "count": 1}, {"shape": b, "count": 1}],
                "exclude": [],
            }
        )
    for count, shape in itertools.product((2, 3, 4), SHAPES):
        suite.append(
            {
                "tag": "counting",
                "prompt": phrase_text(Phrase(shape, count)),
                "include": [{"shape": shape, "count": count}],
                "exclude": [{"shape": shape, "count": count + 1}],
            }
        )
    for shape, colour in itertools.product(SHAPES, colours):
        suite.append(
            {
                "tag": "colors",
                "prompt": phrase_text(Phrase(shape, 1, colour)),
                "include": [{"shape": shape, "count": 1, "colour": colour}],
                "exclude": [],
            }
        )
    options = [(a, rel, b) for a, b in itertools.permutations(SHAPES, 2) for rel in RELATIONS]
    for i in sorted(rng.choice(len(options), 100, replace=False)):
        a, rel, b = options[i]
        suite.append(
            {
                "tag": "position",
                "prompt": relation_text(Phrase(a), rel, Phrase(b)),
                "include": [
                    {"shape": b, "count": 1},
                    {"shape": a, "count": 1, "position": [rel, 0]},
                ],
                "exclude": [],
            }
        )
    for _ in range(100):
        a, b = (str(s) for s in rng.choice(SHAPES, 2, replace=False))
        ca, cb = (str(c) for c in rng.choice(colours, 2, replace=False))
        suite.append(
            {
                "tag": "color_attr",
                "prompt": list_text([Phrase(a, 1, ca), Phrase(b, 1, cb)]),
                "include": [
                    {"shape": a, "count": 1, "colour": ca},
                    {"shape": b, "count": 1, "colour": cb},
                ],
                "exclude": [],
            }
        )
    return suite


def scene_for_prompt(
    entry: dict, rng: np.random.Generator, config: SceneConfig | None = None, tries: int = 500
) -> Scene:
    """A ground-truth scene satisfying a suite entry: the included objects only (unspecified colours
    and sizes drawn from ``config``), placed so that position clauses hold with a clear margin."""
    config = config or SceneConfig()
    entry = validate_suite_entry(entry, 0)
    for _ in range(tries):
        attributes, owners = [], []
        for k, clause in enumerate(entry["include"]):
            for _ in range(clause["count"]):
                _, colour, size = sample_attributes(
                    rng,
                    replace(
                        config, shapes=(clause["shape"],), shape_weights=None, held_out=frozenset()
                    ),
                )
                attributes.append((clause["shape"], clause.get("colour", colour), size))
                owners.append(k)
        objects = place_objects(rng, attributes, config)
        if objects is None:
            continue
        groups = [[o for o in objects if (o.shape, o.colour) == (a[0], a[1])] for a in attributes]
        by_clause = {k: groups[owners.index(k)] for k in set(owners)}
        ok = all(
            clause["position"][0] in relations_between(a, b, GROUND_TRUTH_RELATION_THRESHOLD)
            for k, clause in enumerate(entry["include"])
            if "position" in clause
            for a in by_clause[k]
            for b in by_clause[clause["position"][1]]
        )
        if ok:
            return Scene(objects, sample_background(rng, config))
    raise RuntimeError(f"could not build a scene for prompt {entry['prompt']!r} in {tries} tries")


# ---- scoring folders of images -----------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def collect_images(images_dir: Path, suite: list[dict]) -> list[tuple[Path, int]]:
    """Pair each image file with its prompt index.

    Two layouts are accepted (together, too): sub-folders named by the prompt's 0-based index among
    the suite's non-blank lines (``00012/``, any zero-padding, images anywhere beneath, e.g.
    GenEval's ``00012/samples/0000.png``), and a ``metadata.jsonl`` in ``images_dir`` whose lines
    are ``{"file_name": "relative/path.png", "prompt_index": 12}`` (or ``"prompt": text`` naming a
    unique suite prompt).
    """
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    pairs: dict[Path, int] = {}
    metadata = images_dir / "metadata.jsonl"
    if metadata.is_file():
        by_text: dict[str, list[int]] = {}
        for i, entry in enumerate(suite):
            by_text.setdefault(entry["prompt"], []).append(i)
        for number, text in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                path = images_dir / row["file_name"]
                index = row["prompt_index"] if "prompt_index" in row else by_text[row["prompt"]]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f'{metadata}, line {number}: expected {{"file_name": ..., "prompt_index": int}} or a "prompt" '
                    "equal to one suite prompt"
                ) from None
            if isinstance(index, list):
                if len(index) != 1:
                    raise ValueError(
                        f"{metadata}, line {number}: prompt text appears {len(index)} times in the suite; use prompt_index"
                    )
                index = index[0]
            if not isinstance(index, int) or not 0 <= index < len(suite):
                raise ValueError(
                    f"{metadata}, line {number}: prompt_index {index!r} outside 0..{len(suite) - 1}"
                )
            if not path.is_file():
                raise FileNotFoundError(f"{metadata}, line {number}: image {path} does not exist")
            pairs[path.resolve()] = index
    for sub in sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        index = int(sub.name)
        if index >= len(suite):
            raise ValueError(
                f"sub-folder {sub} names prompt {index}, but the suite has {len(suite)} prompts (0..{len(suite) - 1})"
            )
        for path in _images_in(sub):
            pairs.setdefault(path.resolve(), index)
    if not pairs:
        raise ValueError(
            f"no images found in {images_dir}: put each prompt's images in a sub-folder named by its 0-based "
            "line index (e.g. 00000/0.png) or list them in metadata.jsonl with file_name and prompt_index"
        )
    return sorted(pairs.items(), key=lambda item: (item[1], str(item[0])))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return as_float_image(np.asarray(image.convert("RGB")))


def score_image(image, index: int, suite: list[dict]) -> dict:
    """Detect the objects of one image (``[H, W, 3]`` uint8 or float in [0, 1]) and check them
    against suite entry ``index``: a result row (``prompt_index``, ``tag``, ``prompt``,
    ``passed``, ``reason``, ``detections``)."""
    detections = detect(image)
    passed, reason = evaluate_detections(detections, suite[index])
    return {
        "prompt_index": index,
        "tag": suite[index]["tag"],
        "prompt": suite[index]["prompt"],
        "passed": passed,
        "reason": reason,
        "detections": [d.to_dict() for d in detections],
    }


def score_images(images, prompt_indices: list[int], suite: list[dict]) -> dict:
    """Score images held in memory (a tensor ``[N, 3, H, W]`` in [-1, 1], quantised to 8 bits
    first as a saved PNG would be) against their suite entries; returns :func:`summarise`'s
    figures plus ``results`` (one row per image, as :func:`score_folder` writes)."""
    if len(images) != len(prompt_indices):
        raise ValueError(f"got {len(images)} images for {len(prompt_indices)} prompt indices")
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    results = [
        score_image(as_float_image(array), index, suite)
        for array, index in zip(pixels, prompt_indices, strict=True)
    ]
    return {**summarise(results), "results": results}


def score_folder(
    images_dir: str | Path,
    prompts: str | Path | None = None,
    out: str | Path | None = None,
    progress: Callable | None = None,
) -> dict:
    """Score every image of ``images_dir`` (layouts: :func:`collect_images`) against the suite
    ``prompts`` (default: the shipped suite); write the JSON report to ``out`` if given.

    The report holds ``overall``, ``tasks`` (``score``, ``passed``, ``total`` per task),
    ``missing_tasks``, ``suite``, ``images_dir``, ``num_images``, ``difflab_version`` and ``results`` (one row per
    image: ``file``, ``prompt_index``, ``tag``, ``prompt``, ``passed``, ``reason``,
    ``detections``).
    """
    images_dir = Path(images_dir)
    suite_path = Path(prompts) if prompts is not None else default_suite_path()
    suite = load_suite(suite_path)
    pairs = collect_images(images_dir, suite)
    iterator = progress(pairs) if progress else pairs
    results = []
    for path, index in iterator:
        row = score_image(_read_image(path), index, suite)
        name = (
            path.relative_to(images_dir.resolve())
            if path.is_relative_to(images_dir.resolve())
            else path
        )
        results.append({"file": str(name), **row})
    from difflab import __version__

    report = {
        **summarise(results),
        "suite": str(suite_path),
        "images_dir": str(images_dir),
        "num_images": len(results),
        "difflab_version": __version__,
        "results": results,
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def render_suite_folder(
    out_dir: str | Path,
    prompts: str | Path | None = None,
    images_per_prompt: int = 1,
    size: int = 32,
    seed: int = 0,
) -> int:
    """Write ground-truth renders of a suite in the sub-folder layout (``out_dir/00012/0.png``);
    returns the number of images. Scoring the folder measures the detector on the suite."""
    from difflab.data.shapes_render import render, save_png

    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    suite = load_suite(prompts)
    out_dir = Path(out_dir)
    written = 0
    for index, entry in enumerate(suite):
        folder = out_dir / f"{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(images_per_prompt):
            scene = scene_for_prompt(entry, np.random.default_rng([seed, index, k]))
            parameters = {
                "prompt": entry["prompt"],
                "prompt_index": index,
                "seed": [seed, index, k],
                "scene": scene.to_dict(),
            }
            save_png(render(scene, size), folder / f"{k}.png", parameters)
            written += 1
    return written
