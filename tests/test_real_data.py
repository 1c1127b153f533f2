"""Real images shipped inside scikit-learn and scikit-image."""

import pytest
import torch

from difflab.data.real import (
    PHOTOGRAPHS,
    digits_dataset,
    load_digits,
    load_lfw_subset,
    sample_photograph,
)


def test_digits_are_the_1797_real_images_in_range():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.min() == -1 and images.max() == 1
    assert sorted(set(labels.tolist())) == list(range(10))
    # A zero has ink around a hole: its centre column is darker than its ring.
    zero = images[labels == 0].mean(0)[0]
    assert zero[3:5, 3:5].mean() < zero[1:7, 1:7].mean()
    assert load_digits(16)[0].shape == (1797, 1, 16, 16)


def test_digits_dataset_split_is_deterministic_and_disjoint():
    train, validation = digits_dataset(split="train"), digits_dataset(split="validation")
    assert len(train) + len(validation) == 1797 and len(validation) == 180
    item = validation[0]
    assert item["caption"].startswith("a handwritten ") and item["image"].shape == (1, 8, 8)
    train_set = {tuple(x.flatten().tolist()) for x in train.images}
    assert (
        sum(tuple(x.flatten().tolist()) in train_set for x in validation.images) < 10
    )  # only true duplicates
    assert torch.equal(digits_dataset(split="validation").images, validation.images)


def test_lfw_subset_and_photographs():
    faces, labels = load_lfw_subset()
    assert (
        faces.shape == (200, 1, 25, 25)
        and labels.sum() == 100
        and faces.min() >= -1
        and faces.max() <= 1
    )
    assert load_lfw_subset(faces_only=True, size=32)[0].shape == (100, 1, 32, 32)
    photo = sample_photograph("astronaut", 32)
    assert (
        photo.shape == (3, 32, 32) and -1 <= photo.min() and photo.max() <= 1 and photo.std() > 0.1
    )
    assert sample_photograph("camera", 16).shape == (3, 16, 16)  # grey pictures become RGB
    assert len(PHOTOGRAPHS) >= 10
    with pytest.raises(ValueError, match="valid photographs are: astronaut"):
        sample_photograph("lena")
