"""The digits class-fidelity metric."""

import pytest
import torch

from difflab.data.real import digits_dataset, resize_images
from difflab.eval.digits import class_accuracy, fit_digits_classifier


@pytest.fixture(scope="module")
def classifier():
    return fit_digits_classifier()


def test_classifier_reads_real_digits(classifier):
    assert classifier.validation_accuracy > 0.97
    validation = digits_dataset(16, "validation")  # upsampled like the generated ones
    report = class_accuracy(classifier, validation.images, validation.labels)
    assert report["accuracy"] > 0.9 and set(report["per_class"]) == set(range(10))


def test_wrong_labels_and_noise_score_low(classifier):
    validation = digits_dataset(8, "validation")
    shuffled = (validation.labels + 1) % 10
    assert class_accuracy(classifier, validation.images, shuffled)["accuracy"] < 0.05
    noise = torch.rand(200, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(200) % 10
    assert class_accuracy(classifier, noise, labels)["accuracy"] < 0.3
    with pytest.raises(ValueError, match=r"grey images \[N, 1, H, W\]"):
        classifier.predict(resize_images(torch.zeros(2, 3, 8, 8), 8))
