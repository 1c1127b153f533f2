"""The caption grammar of the shapes world.

A caption is either a *list* of noun phrases that together describe every object ("two blue
squares and a red circle") or a *relation* between two uniquely described objects ("a green
triangle to the left of a yellow star"). Noun phrases mention the shape and optionally the colour
and size ("a small red circle", "one circle that is red"), with counts; a lone object may carry
its absolute position ("a red circle on the left"). Every caption is true of its scene: counts are
exact for the attributes mentioned.

:func:`all_captions` enumerates every caption the grammar gives a scene and :func:`captions`
draws from the same builder, so the ShapesEval prompts (built with :func:`phrase_text` and
:func:`relation_text`) are captions a model trained on this grammar has seen the like of.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from difflab.data.shapes_geometry import NUMBER_WORDS, PLURALS, check_names
from difflab.data.shapes_scene import (
    RELATIONS,
    Scene,
    ShapeObject,
    absolute_position,
    relations_between,
)

LEVELS = (("shape",), ("colour", "shape"), ("size", "colour", "shape"))
PREFIXES = ("", "a picture of ", "an image of ")
PHRASE_VARIANTS = 2
RELATION_WORDS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
WHERE_WORDS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
# How a drawn relation caption is worded: "grammar" - every wording the grammar has (a prefix
# such as "an image of ", and either phrase variant); "plain" - one wording, the ShapesEval
# prompts' ("a circle to the left of a red square": no prefix, variant 0 phrases).
RELATION_WORDINGS = ("grammar", "plain")
RELATION_PROBABILITY = 0.3
# Relations in captions need a clearer separation than GenEval's evaluation threshold (0.1), so
# that a caption stays true under small jitter of a generated image.
CAPTION_RELATION_THRESHOLD = 0.25


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: ``count`` objects of ``shape`` with optional ``colour``, ``size``, ``where``."""

    shape: str
    count: int = 1
    colour: str | None = None
    size: str | None = None
    where: str | None = None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase_text(phrase: Phrase, variant: int = 0) -> str:
    """Text of a noun phrase. Variant 0: "a small red circle", "two red circles";
    variant 1: "one small circle that is red", "two circles that are red"."""
    noun = phrase.shape if phrase.count == 1 else PLURALS[phrase.shape]
    adjectives = [a for a in (phrase.size, phrase.colour) if a]
    if variant == 1 and phrase.colour and not phrase.where:
        verb = "is" if phrase.count == 1 else "are"
        return " ".join(
            filter(
                None, [NUMBER_WORDS[phrase.count], phrase.size, noun, "that", verb, phrase.colour]
            )
        )
    words = [*adjectives, noun]
    if phrase.count == 1:
        determiner = "one" if variant == 1 else _article(words[0])
    else:
        determiner = NUMBER_WORDS[phrase.count]
    text = " ".join([determiner, *words])
    return f"{text} {WHERE_WORDS[phrase.where]}" if phrase.where else text


def list_text(
    phrases: list[Phrase], variants: tuple[int, ...] | None = None, prefix: str = ""
) -> str:
    """Join noun phrases: "a, b and c" (``variants`` per phrase, default all 0)."""
    variants = variants or (0,) * len(phrases)
    parts = [phrase_text(p, v) for p, v in zip(phrases, variants, strict=True)]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return prefix + body


def relation_text(
    a: Phrase, relation: str, b: Phrase, variants: tuple[int, int] = (0, 0), prefix: str = ""
) -> str:
    """ "a green triangle to the left of a yellow star" (``relation`` from ``RELATIONS``)."""
    if relation not in RELATION_WORDS:
        raise ValueError(
            f"unknown relation {relation!r}; valid relations are: {', '.join(RELATIONS)}"
        )
    return f"{prefix}{phrase_text(a, variants[0])} {RELATION_WORDS[relation]} {phrase_text(b, variants[1])}"


def _key(obj: ShapeObject, level: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(getattr(obj, attribute) for attribute in level)


def scene_phrases(scene: Scene, level: tuple[str, ...], with_where: bool = False) -> list[Phrase]:
    """Group the objects by the attributes in ``level`` into phrases ordered left to right."""
    groups: dict[tuple[str, ...], list[ShapeObject]] = {}
    for obj in scene.objects:
        groups.setdefault(_key(obj, level), []).append(obj)
    phrases = []
    for members in sorted(groups.values(), key=lambda m: sum(o.centre[0] for o in m) / len(m)):
        first = members[0]
        where = absolute_position(first) if with_where and len(members) == 1 else None
        phrases.append(
            Phrase(
                first.shape,
                len(members),
                first.colour if "colour" in level else None,
                first.size if "size" in level else None,
                where,
            )
        )
    return phrases


def _relation_options(scene: Scene) -> list[tuple[Phrase, str, Phrase]]:
    """Every (phrase a, relation, phrase b) between two objects each unique at its level."""
    counts = {level: Counter(_key(o, level) for o in scene.objects) for level in LEVELS}

    def unique_phrases(obj: ShapeObject) -> list[Phrase]:
        return [
            Phrase(
                obj.shape,
                1,
                obj.colour if "colour" in level else None,
                obj.size if "size" in level else None,
            )
            for level in LEVELS
            if counts[level][_key(obj, level)] == 1
        ]

    options = []
    for a, b in itertools.permutations(scene.objects, 2):
        found = sorted(relations_between(a, b, CAPTION_RELATION_THRESHOLD))
        if found:
            for phrase_a, phrase_b in itertools.product(unique_phrases(a), unique_phrases(b)):
                options.extend((phrase_a, rel, phrase_b) for rel in found)
    return options


def all_captions(scene: Scene) -> list[str]:
    """Every caption the grammar produces for ``scene`` (sorted, without duplicates)."""
    out = set()
    for level, with_where, reverse in itertools.product(LEVELS, (False, True), (False, True)):
        phrases = scene_phrases(scene, level, with_where)
        phrases = phrases[::-1] if reverse else phrases
        for variants in itertools.product(range(PHRASE_VARIANTS), repeat=len(phrases)):
            out.update(list_text(phrases, variants, prefix) for prefix in PREFIXES)
    for a, rel, b in _relation_options(scene):
        for variants in itertools.product(range(PHRASE_VARIANTS), repeat=2):
            out.update(relation_text(a, rel, b, variants, prefix) for prefix in PREFIXES)  # type: ignore[arg-type]
    return sorted(out)


def captions(
    scene: Scene,
    rng: np.random.Generator,
    k: int = 1,
    relation_probability: float = RELATION_PROBABILITY,
    relation_wording: str = "grammar",
) -> list[str]:
    """Draw ``k`` distinct captions of ``scene`` (fewer if the grammar has fewer) using ``rng``.

    A relation caption is drawn with ``relation_probability`` when the scene has a clear pair,
    worded as ``relation_wording`` says (:data:`RELATION_WORDINGS`). ``"plain"`` draws the same
    numbers from ``rng`` as ``"grammar"`` and only drops the prefix and phrase variant, so the
    two give the same objects, levels and relations for the same generator.
    """
    check_names("relation wording", relation_wording, RELATION_WORDINGS)
    relation_options = None
    out: list[str] = []
    for _ in range(20 * k):
        prefix = PREFIXES[rng.integers(len(PREFIXES))]
        if len(scene.objects) > 1 and rng.random() < relation_probability:
            if relation_options is None:
                relation_options = _relation_options(scene)
            if relation_options:
                a, rel, b = relation_options[rng.integers(len(relation_options))]
                variants = tuple(rng.integers(PHRASE_VARIANTS, size=2))
                if relation_wording == "plain":
                    variants, prefix = (0, 0), ""
                text = relation_text(a, rel, b, variants, prefix)  # type: ignore[arg-type]
                if text not in out:
                    out.append(text)
                if len(out) == k:
                    break
                continue
        level = LEVELS[rng.integers(len(LEVELS))]
        phrases = scene_phrases(scene, level, with_where=bool(rng.random() < 0.3))
        phrases = phrases[::-1] if rng.random() < 0.5 else phrases
        text = list_text(
            phrases, tuple(int(v) for v in rng.integers(PHRASE_VARIANTS, size=len(phrases))), prefix
        )
        if text not in out:
            out.append(text)
        if len(out) == k:
            break
    return out
