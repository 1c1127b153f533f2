"""TrainConfig: TOML loading, unknown keys, types and ranges."""

from __future__ import annotations

import pytest

from difflab.train import TrainConfig, load_config


def test_load_from_toml(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        'max_steps = 200\nlearning_rate = 1\nlr_schedule = "cosine"\n'
        "ema_decay = 0.999\nema_warmup = false\n"
    )
    config = load_config(path)
    assert config.max_steps == 200 and config.learning_rate == 1.0
    assert config.lr_schedule == "cosine" and config.ema_warmup is False
    assert config.batch_size == TrainConfig().batch_size  # defaults for the rest
    assert load_config(path, max_steps=7, seed=None).max_steps == 7  # command-line overrides


def test_load_a_section_of_a_recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[model]\nkind = "unet"\n\n[train]\nbatch_size = 4\n')
    assert load_config(path, section="train").batch_size == 4
    with pytest.raises(ValueError, match=r"no \[optim\] table"):
        load_config(path, section="optim")


def test_unknown_key_lists_the_valid_keys(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("max_steps = 10\nlearnig_rate = 0.1\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    message = str(err.value)
    assert "'learnig_rate'" in message and str(path) in message
    for key in ("learning_rate", "max_steps", "ema_decay", "checkpoint_every", "seed"):
        assert key in message.split("Valid keys are:")[1]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('max_steps = "100"', "max_steps must be of type int"),
        ("batch_size = 8.0", "batch_size must be of type int"),
        ("max_steps = true", "max_steps must be of type int"),
        ('ema_warmup = "yes"', "ema_warmup must be of type bool"),
        ("learning_rate = [0.1]", "learning_rate must be of type float"),
    ],
)
def test_wrong_types_are_refused(tmp_path, text, match):
    path = tmp_path / "train.toml"
    path.write_text(text + "\n")
    with pytest.raises(TypeError, match=match):
        load_config(path)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"lr_schedule": "step"}, "lr_schedule must be one of constant, cosine, linear"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, fp16, bf16"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
    ],
)
def test_out_of_range_values_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(values)


def test_round_trip_through_a_dict():
    config = TrainConfig(max_steps=3, ema_decay=0.5)
    assert TrainConfig.from_dict(config.to_dict()) == config
