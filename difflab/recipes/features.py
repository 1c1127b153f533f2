"""Recipe: difflab's feature networks for FID / KID / precision-recall (``kind = "features"``).

A :class:`~difflab.models.feature_nets.FeatureNet` is trained as a supervised classifier of its
domain, as Inception-v3 was for ImageNet before Heusel et al. 2017 took its pool3 layer as the FID
feature; its global-average-pooled last block becomes the feature vector.

- ``dataset = "shapes"``: renders of the shapes world, labelled from their exact scene
  annotations with four heads: which shapes are present (multi-label, 7), which colours
  (multi-label, 10), which size classes (multi-label, 2) and how many objects (multi-class,
  ``min_objects``..``max_objects``). Loss: binary cross-entropy per multi-label head plus
  cross-entropy for the count, summed. Scenes are drawn fresh for every index, so with a large
  ``dataset_length`` the network rarely sees a scene twice.
- ``dataset = "digits"``: scikit-learn's real 8x8 digits upsampled to ``image_size`` (16 px, as
  the digits model generates), one 10-class head, cross-entropy; the 1,617 training images are
  shifted by up to ``shift`` pixels at random (drawn from the Trainer's generator) so the network
  does not memorise them.

Held-out accuracy per head (``results.json``): shapes on ``validation_length`` scenes of the
validation split, digits on the 180-image validation split (the split the digits model never saw).
A multi-label head counts as right on an image only when its whole set of labels is right
(``heldout_accuracy``); ``heldout_label_accuracy`` is the mean over single labels. The sanity
figure ``fid_sanity`` compares two disjoint real validation sets, and a real set with blurred and
noisy copies of the other (see :func:`difflab.eval.distribution.sanity_figures`).

``noise_aware = true`` makes the network the **noise-aware classifier of classifier guidance**
(Dhariwal & Nichol 2021, Sec. 4: "we train a classifier p(y | x_t, t) on noisy images x_t"):
a ``noisy_fraction`` of each batch is noised to ``x_t = alpha x_0 + sigma eps`` at a log-SNR
drawn uniformly from ``[log_snr_min, log_snr_max]`` (the rest stays clean), and the network is
told each image's log-SNR (FiLM of its first block, as shapes-clip's image tower). Held-out
accuracy is then also reported at log-SNR 5, 0 and -5 (``heldout_accuracy_noisy``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from difflab.data.real import DIGIT_WORDS, digits_dataset
from difflab.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    SceneConfig,
    render,
    sample_scene,
    scene_rng,
    to_tensor,
)
from difflab.eval.features import extract_features
from difflab.models.feature_nets import FeatureNet, FeatureNetConfig, Head, save_feature_network
from difflab.models.networks import parameter_count
from difflab.models.noise_conditioning import EVAL_LOG_SNRS, noise_images
from difflab.train import TrainConfig, seeded_weights, train

DATASETS = ("shapes", "digits")


@dataclass
class FeaturesRecipe:
    """Options of the ``features`` recipe."""

    dataset: str = "shapes"  # "shapes" (multi-label scene heads) or "digits" (10 classes)
    image_size: int = 32
    channels: tuple = (32, 64, 64)  # one block each; the last width is the feature dimension D
    layers_per_block: int = 2
    norm_groups: int = 8  # GroupNorm groups; 0 = no normalisation
    pooling: str = "mean"  # "mean" or "mean_max" (see FeatureNetConfig)
    dataset_length: int = 100_000  # shapes: training scenes (each drawn from its own seed)
    validation_length: int = 2_000  # shapes: held-out scenes for accuracy and the sanity figure
    max_objects: int = 4  # shapes: scenes hold 1..max_objects objects (the count head's classes)
    shift: int = 0  # random translation augmentation, in pixels (0 = off)
    scaling_images: int = 2000  # training images that set the feature scale
    noise_aware: bool = False  # train on noisy images told their log-SNR (classifier guidance)
    noisy_fraction: float = 0.8  # share of each batch noised (noise_aware only)
    log_snr_min: float = -10.0  # noise levels drawn uniformly in [log_snr_min, log_snr_max]
    log_snr_max: float = 10.0


def shapes_heads(max_objects: int = 4) -> tuple[Head, ...]:
    """The heads of the shapes feature network (label names from the shapes world)."""
    return (
        Head("shape", "multilabel", tuple(SHAPES)),
        Head("colour", "multilabel", tuple(COLOURS)),
        Head("size", "multilabel", tuple(SIZES)),
        Head("count", "multiclass", tuple(str(n) for n in range(1, max_objects + 1))),
    )


DIGITS_HEADS = (Head("digit", "multiclass", DIGIT_WORDS),)


def scene_targets(scene, heads: tuple[Head, ...]) -> dict[str, torch.Tensor]:
    """Training targets of one scene: a multi-hot float vector per multi-label head (shape,
    colour, size: which values some object has) and the object count's class index."""
    values = {
        "shape": {o.shape for o in scene.objects},
        "colour": {o.colour for o in scene.objects},
        "size": {o.size for o in scene.objects},
    }
    targets = {}
    for head in heads:
        if head.kind == "multilabel":
            targets[head.name] = torch.tensor(
                [label in values[head.name] for label in head.labels], dtype=torch.float32
            )
        else:
            targets[head.name] = torch.tensor(head.labels.index(str(len(scene.objects))))
    return targets


class ShapesAttributes(Dataset):
    """Shapes-world renders with their head targets: items ``{"image": [3, S, S] in [-1, 1],
    "shape", "colour", "size": multi-hot, "count": class index}``. Item ``i`` of a split is the
    scene of :func:`~difflab.data.shapes.scene_rng` ``(seed, split, i)``, as in ShapesDataset."""

    def __init__(
        self, length: int, size: int, split: str = "train", seed: int = 0, max_objects: int = 4
    ) -> None:
        scene_rng(seed, split, 0)  # validates split
        self.length, self.size, self.split, self.seed = length, size, split, seed
        self.config = SceneConfig(max_objects=max_objects)
        self.heads = shapes_heads(max_objects)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        scene = sample_scene(scene_rng(self.seed, self.split, index), self.config)
        return {"image": to_tensor(render(scene, self.size)), **scene_targets(scene, self.heads)}


class DigitItems(Dataset):
    """scikit-learn's digits as ``{"image": [1, S, S], "digit": class index}`` (a split of
    :func:`~difflab.data.real.digits_dataset`)."""

    def __init__(self, size: int, split: str = "train", seed: int = 0) -> None:
        self.data = digits_dataset(size, split, seed=seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.data.images[index], "digit": self.data.labels[index]}


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in ``[-pixels, pixels]`` on both axes,
    filling with the border value (edge padding then a crop)."""
    n, _, h, w = images.shape
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator).tolist()
    padded = torch.nn.functional.pad(images, (pixels,) * 4, mode="replicate")
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def classification_objective(
    heads: tuple[Head, ...], shift: int = 0, noise: tuple[float, float, float] | None = None
):
    """``objective(net, batch, generator)``: the summed losses of all heads — binary
    cross-entropy (mean over labels) for multi-label heads, cross-entropy for multi-class.
    ``noise = (noisy_fraction, log_snr_min, log_snr_max)`` noises the (shifted) images first
    (:func:`~difflab.models.noise_conditioning.noise_images`) and tells the net their log-SNR."""

    def objective(model, batch, generator):
        images, log_snr = batch["image"], None
        if shift:
            images = random_shift(images, shift, generator)
        if noise is not None:
            images, log_snr = noise_images(images, generator, *noise)
        logits = model(images, logits=True, log_snr=log_snr)
        loss = images.new_zeros(())
        for head in heads:
            target = batch[head.name]
            if head.kind == "multilabel":
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[head.name], target.float()
                )
            else:
                loss = loss + torch.nn.functional.cross_entropy(logits[head.name], target)
        return loss

    return objective


@torch.no_grad()
def heldout_accuracy(
    net: FeatureNet, dataset: Dataset, batch_size: int = 256, log_snr: float | None = None
) -> dict:
    """Per head: ``accuracy`` (an image counts when the head is right on every label) and
    ``label_accuracy`` (mean over single labels; equal to accuracy for multi-class heads).
    ``log_snr``: noise the images to that level first (noise seeded 0; noise-aware nets)."""
    generator = torch.Generator().manual_seed(0)
    was_training = net.training
    net.eval()
    right: dict[str, list[torch.Tensor]] = {h.name: [] for h in net.config.heads}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([torch.as_tensor(item[k]) for item in items]) for k in items[0]}
        images = batch["image"]
        if log_snr is not None:
            images, _ = noise_images(images, generator, 1.0, log_snr, log_snr)
        logits = net.logits(images, log_snr=log_snr)
        for head in net.config.heads:
            if head.kind == "multilabel":
                right[head.name].append((logits[head.name] > 0) == (batch[head.name] > 0.5))
            else:
                right[head.name].append((logits[head.name].argmax(1) == batch[head.name])[:, None])
    net.train(was_training)
    per_head = {name: torch.cat(parts) for name, parts in right.items()}
    return {
        "accuracy": {k: float(v.all(dim=1).double().mean()) for k, v in per_head.items()},
        "label_accuracy": {k: float(v.double().mean()) for k, v in per_head.items()},
    }


def _stack(dataset: Dataset, count: int) -> torch.Tensor:
    return torch.stack([dataset[i]["image"] for i in range(min(count, len(dataset)))])


@torch.no_grad()
def feature_scale(net: FeatureNet, data: Dataset, options: FeaturesRecipe) -> float:
    """``1 / sqrt(mean(pool**2))`` over the first ``scaling_images`` training images: features
    of about unit size, as KID's cubic kernel assumes (cf. the VAE's latent scaling factor)."""
    pooled = extract_features(
        net.pooled, _stack(data, options.scaling_images), 256, progress=False
    ).double()
    return float(1.0 / pooled.square().mean().sqrt())


def _network(options: FeaturesRecipe, heads: tuple[Head, ...], channels: int) -> FeatureNet:
    return FeatureNet(
        FeatureNetConfig(
            in_channels=channels,
            image_size=options.image_size,
            channels=tuple(options.channels),
            layers_per_block=options.layers_per_block,
            norm_groups=options.norm_groups,
            pooling=options.pooling,
            heads=heads,
            noise_aware=options.noise_aware,
            log_snr_min=options.log_snr_min,
            log_snr_max=options.log_snr_max,
            name=f"{options.dataset}-{'classifier' if options.noise_aware else 'features'}",
        )
    )


def run(
    options: FeaturesRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train, save the network to ``out/features`` and return the measured figures."""
    from difflab.eval.distribution import sanity_figures

    if options.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {options.dataset!r}; use one of {', '.join(DATASETS)}.")
    if options.dataset == "shapes":
        heads = shapes_heads(options.max_objects)
        data = ShapesAttributes(
            options.dataset_length, options.image_size, "train", config.seed, options.max_objects
        )
        validation = ShapesAttributes(
            options.validation_length, options.image_size, "validation", 0, options.max_objects
        )
        channels = 3
    else:
        heads = DIGITS_HEADS
        data = DigitItems(options.image_size, "train")
        validation = DigitItems(options.image_size, "validation")
        channels = 1
    with seeded_weights(config.seed):  # initial weights from the run's seed
        net = _network(options, heads, channels)
    noise = None
    if options.noise_aware:
        if not 0 <= options.noisy_fraction <= 1:
            raise ValueError(f"noisy_fraction must be in [0, 1], got {options.noisy_fraction}")
        noise = (options.noisy_fraction, options.log_snr_min, options.log_snr_max)
    result = train(
        config,
        net,
        classification_objective(heads, options.shift, noise),
        data,
        out,
        resume=resume,
        overwrite=overwrite,
    )
    final = (result.ema_model or result.model).eval()
    final.config = replace(final.config, feature_scale=feature_scale(final, data, options))
    save_feature_network(final, out / "features")
    measured = heldout_accuracy(final, validation)
    # FID needs more images than feature dimensions in each half of the validation set.
    enough = len(validation) // 2 > final.config.embedding_dim
    sanity = (
        sanity_figures(final, _stack(validation, len(validation)), torch.Generator().manual_seed(0))
        if enough
        else None
    )
    noisy = {
        str(level): heldout_accuracy(final, validation, log_snr=level)["accuracy"]
        for level in (EVAL_LOG_SNRS if options.noise_aware else ())
    }
    return {
        "parameters": parameter_count(final),
        "feature_dim": final.config.embedding_dim,
        "feature_scale": final.config.feature_scale,
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "heldout_images": len(validation),
        "heldout_accuracy": measured["accuracy"],
        "heldout_label_accuracy": measured["label_accuracy"],
        **({"heldout_accuracy_noisy": noisy} if noisy else {}),
        "fid_sanity": sanity,
        "features": str(out / "features"),
    }
