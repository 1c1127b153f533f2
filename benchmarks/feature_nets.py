"""Sanity figures of a feature network: does FID tell real images from corrupted ones?

Splits real validation images into two disjoint halves A and B and prints, as a markdown table,
FID, KID and precision/recall (k = 3) between A and B (real vs real) and between A and corrupted copies of B (Gaussian blur,
additive Gaussian noise), plus the network's held-out accuracy per head and, for a multi-class
network, the Inception Score of real images. A feature network worth using keeps real vs real far
below every corruption.

    python benchmarks/feature_nets.py --features shapes-features [--images 2000]
    python benchmarks/feature_nets.py --features digits-features --reference digits-train
"""

from __future__ import annotations

import argparse
import time

import torch

from difflab.eval.distribution import REFERENCES, add_noise, gaussian_blur, reference_images
from difflab.eval.features import extract_features
from difflab.eval.metrics import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from difflab.models.feature_nets import load_feature_network
from difflab.recipes.features import DigitItems, ShapesAttributes, heldout_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="shapes-features")
    parser.add_argument(
        "--reference", default=None, help=f"one of {', '.join(REFERENCES)}; default by network"
    )
    parser.add_argument("--images", type=int, default=None, help="real images, split in halves")
    args = parser.parse_args()

    net = load_feature_network(args.features)
    digits = net.config.in_channels == 1
    reference = args.reference or ("digits" if digits else "shapes")
    count = args.images or (REFERENCES[reference] or 2000)
    size = net.config.image_size
    print(f"{args.features}: D = {net.config.embedding_dim}, input {size}x{size}")

    validation = (
        DigitItems(size, "validation")
        if digits
        else ShapesAttributes(2000, size, "validation", 0, len(net.head("count").labels))
    )
    accuracy = heldout_accuracy(net, validation)
    for head, value in accuracy["accuracy"].items():
        label = accuracy["label_accuracy"][head]
        print(f"held-out accuracy {head}: {value:.4f} (per label {label:.4f})")

    images, _ = reference_images(reference, count, size, net.config.in_channels)
    half = len(images) // 2
    a, b = images[:half], images[half : 2 * half]
    generator = torch.Generator().manual_seed(0)
    sets = [
        ("real vs real (disjoint)", b),
        ("blur sigma 0.5 px", gaussian_blur(b, 0.5)),
        ("blur sigma 1 px", gaussian_blur(b, 1.0)),
        ("blur sigma 2 px", gaussian_blur(b, 2.0)),
        ("noise std 0.1", add_noise(b, 0.1, generator)),
        ("noise std 0.2", add_noise(b, 0.2, generator)),
        ("noise std 0.4", add_noise(b, 0.4, generator)),
    ]
    start = time.perf_counter()
    features_a = extract_features(net, a, 256, progress=False)
    print(f"\n{reference} {a.shape[0]} vs {b.shape[0]} images ({half} per set)\n")
    print("| B is | FID | KID | precision | recall |")
    print("|---|---:|---:|---:|---:|")
    for name, x in sets:
        features_b = extract_features(net, x, 256, progress=False)
        kid, _ = kernel_inception_distance(features_a, features_b, 100, min(1000, half))
        fid = frechet_distance(features_a, features_b)
        pr = precision_recall(features_a, features_b, k=3)
        print(f"| {name} | {fid:.3g} | {kid:.3g} | {pr['precision']:.3f} | {pr['recall']:.3f} |")
    if digits:
        classifier = net.classifier("digit")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        for name, x in (("real", images[order]), ("blurred 1 px", gaussian_blur(images[order], 1))):
            logits = extract_features(classifier, x, 256, progress=False)
            mean, std = inception_score(logits=logits, splits=10 if len(x) >= 1000 else 1)
            print(f"Inception Score of {name} images ({reference}): {mean:.3f} ± {std:.3f}")
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
