"""Class fidelity of generated digits, measured by a classifier of the real ones.

An RBF support-vector classifier (scikit-learn) is fitted on the 8x8 images of the training split
of scikit-learn's digits (it scores about 99% on the held-out split); a generated image counts as
correct when, resized to 8x8, the classifier reads the class it was generated for. The classifier
is fitted on the fly (under a second), so nothing is stored or unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from difflab.data.real import digits_dataset, resize_images


@dataclass
class DigitsClassifier:
    """A fitted classifier of 8x8 digits in [-1, 1]; ``validation_accuracy`` on the held-out split."""

    model: object
    validation_accuracy: float

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Class ids of images [N, 1, H, W] in [-1, 1] (resized to 8x8 first)."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected grey images [N, 1, H, W], got {tuple(images.shape)}")
        small = resize_images(images.float().cpu(), 8) if images.shape[-1] != 8 else images
        return self.model.predict(small.flatten(1).numpy())


def fit_digits_classifier(seed: int = 0) -> DigitsClassifier:
    """Fit the reference classifier on the train split (8x8, no resizing)."""
    from sklearn.svm import SVC

    train = digits_dataset(None, "train", seed=seed)
    validation = digits_dataset(None, "validation", seed=seed)
    model = SVC(C=10.0, gamma="scale").fit(train.images.flatten(1).numpy(), train.labels.numpy())
    accuracy = float(
        (model.predict(validation.images.flatten(1).numpy()) == validation.labels.numpy()).mean()
    )
    return DigitsClassifier(model, accuracy)


def class_accuracy(
    classifier: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor | np.ndarray
) -> dict:
    """Overall and per-class fraction of images the classifier reads as their label."""
    labels = np.asarray(labels)
    predicted = classifier.predict(images)
    per_class = {int(c): float((predicted[labels == c] == c).mean()) for c in np.unique(labels)}
    return {"accuracy": float((predicted == labels).mean()), "per_class": per_class}
