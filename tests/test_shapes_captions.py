"""The caption grammar: phrasing, truthfulness of counts and relations, determinism."""

import numpy as np
import pytest

from difflab.data.shapes import (
    Phrase,
    Scene,
    ShapeObject,
    all_captions,
    captions,
    list_text,
    phrase_text,
    relation_text,
    sample_scene,
)


def test_phrases_and_paraphrases():
    assert phrase_text(Phrase("circle", 1, "red")) == "a red circle"
    assert phrase_text(Phrase("circle", 1, "red"), variant=1) == "one circle that is red"
    assert phrase_text(Phrase("square", 2, "blue")) == "two blue squares"
    assert phrase_text(Phrase("cross", 3)) == "three crosses"
    assert phrase_text(Phrase("star", 1, "orange")) == "an orange star"
    assert (
        phrase_text(Phrase("ring", 1, "green", "small", "left")) == "a small green ring on the left"
    )
    assert (
        phrase_text(Phrase("heart", 2, "pink", "large"), variant=1)
        == "two large hearts that are pink"
    )
    assert (
        list_text([Phrase("circle", 1, "red"), Phrase("square", 2), Phrase("star")])
        == "a red circle, two squares and a star"
    )
    text = relation_text(Phrase("triangle", 1, "green"), "left of", Phrase("star", 1, "yellow"))
    assert text == "a green triangle to the left of a yellow star"


def test_captions_state_exact_counts_and_true_relations():
    scene = Scene(
        (
            ShapeObject("circle", "red", "small", (0.2, 0.5)),
            ShapeObject("circle", "blue", "large", (0.5, 0.2)),
            ShapeObject("square", "blue", "small", (0.8, 0.8)),
        )
    )
    texts = set(all_captions(scene))
    for expected in (
        "two circles and a square",
        "a red circle, a blue circle and a blue square",
        "a small red circle, a large blue circle and a small blue square",
        "one circle that is red, a blue circle and a blue square",
        "a picture of a square and two circles",
        "a red circle to the left of a square",
        "a square below a large blue circle",
        "a red circle on the left, a blue circle at the top and a blue square",
    ):
        assert expected in texts, expected
    for wrong in (
        "a circle and a square",
        "three circles",
        "a red circle to the right of a square",
        "a circle to the left of a square",
    ):
        assert wrong not in texts, (
            wrong
        )  # counts are exact; "a circle" would be ambiguous in a relation


def test_sampled_captions_are_distinct_deterministic_and_from_the_grammar():
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = sample_scene(rng)
        seed = int(rng.integers(1 << 30))
        drawn = captions(scene, np.random.default_rng(seed), k=4)
        assert drawn == captions(scene, np.random.default_rng(seed), k=4)
        assert len(drawn) == len(set(drawn)) >= 3
        assert set(drawn) <= set(all_captions(scene))
    single = Scene((ShapeObject("star", "white", "large", (0.5, 0.5)),))
    assert "a white star in the middle" in all_captions(single)


def test_plain_relation_wording_keeps_the_draw_and_drops_prefix_and_paraphrase():
    """ "plain" words a relation caption as the ShapesEval prompts do; it draws the same numbers,
    so it names the same objects and relation as the grammar's caption from the same generator,
    and list captions are unchanged."""
    rng = np.random.default_rng(1)
    relation_words = ("to the left of", "to the right of", "above", "below")
    relations = plain_grammar_matches = 0
    for _ in range(200):
        scene = sample_scene(rng)
        seed = int(rng.integers(1 << 30))
        grammar = captions(scene, np.random.default_rng(seed), 1, 0.8)[0]
        plain = captions(scene, np.random.default_rng(seed), 1, 0.8, "plain")[0]
        assert plain in all_captions(scene)
        said = [w for w in relation_words if f" {w} " in grammar]
        if not said:
            assert plain == grammar
            continue
        relations += 1
        assert [w for w in relation_words if f" {w} " in plain] == said
        assert not plain.startswith(("a picture of", "an image of"))
        assert " that " not in plain and not plain.startswith("one ")
        for colour_or_shape in plain.replace(said[0], " ").split():
            assert colour_or_shape in grammar  # the same objects at the same level
        plain_grammar_matches += plain == grammar
    assert relations > 50 and 0 < plain_grammar_matches < relations
    with pytest.raises(
        ValueError,
        match=r"unknown relation wording \['fancy'\]; valid relation wordings are: grammar, plain",
    ):
        captions(scene, rng, 1, relation_wording="fancy")
