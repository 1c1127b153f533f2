"""difflab's own feature networks for FID / KID / precision-recall: small supervised CNNs.

FID compares Gaussians fitted to the *features* of two image sets; Heusel et al. 2017
(arXiv:1706.08500) take the 2048-d pool3 layer of an ImageNet Inception-v3 (Szegedy et al. 2016),
i.e. the global average pool just before the classifier. ImageNet features say little about
32-px renders of coloured shapes or 16-px digits, and no such network may be downloaded here, so
difflab trains its own, the same way: a classifier of the domain whose **penultimate global
pool** is the feature vector. A :class:`FeatureNet` is

    images [B, C, S, S] in [-1, 1]
      -> blocks of (3x3 conv, GroupNorm, SiLU) x layers_per_block, 2x2 average pool between blocks
      -> global average pool (and, with pooling="mean_max", max pool) -> pool [B, D]
      -> one linear head per label group -> logits;  pool x feature_scale = the FID feature

trained by :mod:`difflab.recipes.features`: for the shapes world, multi-label heads for which
shapes, colours and size classes a scene contains plus a multi-class head for its object count;
for digits, the 10-class label (whose softmax gives the Inception Score, Salimans et al. 2016).
GroupNorm instead of BatchNorm keeps a sample's features independent of its batch.

Calling the module gives the embedding, so it plugs straight into
:func:`difflab.eval.features.extract_features`; :meth:`FeatureNet.logits` gives the heads.
Inputs are checked: the channel count must match; an image of another (square) size is refused
unless ``resize=True``, which resamples it to the network's size with antialiased bilinear
interpolation (documented in ``docs/metrics.md``: resampling itself changes the statistics, so
compare only sets that went through the same resize).

**Noise-aware** (``noise_aware = True``): the same network is the classifier of classifier
guidance (Dhariwal & Nichol 2021, Sec. 4), trained on noisy images x_t and told each one's
log-SNR, which modulates its first block's output (FiLM, shared with the CLIP image tower; see
:mod:`difflab.models.noise_conditioning`). ``net.logits(x_t, log_snr)`` then gives
log p(y | x_t) up to the heads' normalisation (:func:`difflab.guidance.classifier_log_prob`).

Storage: a folder with ``config.json`` (the architecture and label names, ``_class_name``
:data:`CLASS_NAME`) and ``model.safetensors``; nothing is pickled. Shipped networks live in the
zoo (:func:`difflab.zoo.list_feature_networks`); :func:`load_feature_network` takes a shipped
name or a folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from difflab.models.noise_conditioning import LogSNREmbedding, check_noise_range
from difflab.models.weights import state_dict_differences

__all__ = [
    "CLASS_NAME", "CONFIG_FILE", "HEAD_KINDS", "WEIGHTS_FILE", "FeatureNet", "FeatureNetConfig",
    "Head", "is_feature_network_folder", "load_feature_network", "save_feature_network",
]  # fmt: skip

CLASS_NAME = "DifflabFeatureNet"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_KINDS = ("multilabel", "multiclass")
POOLINGS = ("mean", "mean_max")


@dataclass(frozen=True)
class Head:
    """A linear head: ``multilabel`` (one independent sigmoid per label: is it present?) or
    ``multiclass`` (one softmax over the labels: which one?)."""

    name: str
    kind: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(
                f"head {self.name!r}: kind must be one of {', '.join(HEAD_KINDS)}, got {self.kind!r}"
            )
        if len(self.labels) < 2:
            raise ValueError(f"head {self.name!r} needs at least 2 labels, got {self.labels!r}")


@dataclass(frozen=True)
class FeatureNetConfig:
    """The architecture of a :class:`FeatureNet` (everything ``config.json`` stores)."""

    in_channels: int = 3
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 64)  # one block each; the last is the feature width D
    layers_per_block: int = 2
    norm_groups: int = 8  # GroupNorm groups; 0 = no normalisation
    pooling: str = "mean"  # "mean" (D = width) or "mean_max" (mean and max pools, D = 2 width)
    feature_scale: float = 1.0  # features are pooled activations times this (set from data)
    heads: tuple[Head, ...] = field(default_factory=tuple)
    # noise-aware (the classifier of classifier guidance): the first block's output is modulated
    # by each image's log-SNR (FiLM), clamped to [log_snr_min, log_snr_max]; clean = log_snr_max
    noise_aware: bool = False
    noise_features: int = 16  # Fourier features of the log-SNR
    log_snr_min: float = -10.0
    log_snr_max: float = 10.0
    name: str = ""

    def __post_init__(self) -> None:
        check_noise_range(self.noise_features, self.log_snr_min, self.log_snr_max)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {self.in_channels}")
        if not self.channels or min(self.channels) < 1 or self.layers_per_block < 1:
            raise ValueError(
                f"need at least one block of positive width and layers_per_block >= 1, got "
                f"channels={self.channels}, layers_per_block={self.layers_per_block}"
            )
        for width in self.channels:
            if self.norm_groups and width % self.norm_groups:
                raise ValueError(
                    f"every block width must be divisible by norm_groups={self.norm_groups}, got "
                    f"channels={self.channels}"
                )
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of {factor}, the downsampling of "
                f"{len(self.channels)} blocks; use fewer blocks or another size"
            )
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ValueError(f"head names must be unique, got {names}")

    @property
    def embedding_dim(self) -> int:
        """D, the width of the feature vector (the last block's width, doubled for mean_max)."""
        return self.channels[-1] * (2 if self.pooling == "mean_max" else 1)

    def to_dict(self) -> dict:
        return {"_class_name": CLASS_NAME, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> FeatureNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused."""
        from difflab.typed_config import without_class_name

        data = without_class_name(data, CLASS_NAME, "feature network", source)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are: "
                f"{', '.join(sorted(known))}"
            )
        try:
            heads = tuple(
                Head(h["name"], h["kind"], tuple(h["labels"])) for h in data.pop("heads", [])
            )
        except (KeyError, TypeError):
            raise ValueError(
                f"{source}: each head must be an object with name, kind and labels"
            ) from None
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(heads=heads, **data)


def _block(in_channels: int, out_channels: int, layers: int, groups: int) -> nn.Sequential:
    """``layers`` x (3x3 conv, GroupNorm (Wu & He 2018) unless ``groups`` is 0, SiLU)."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
        )
        if groups:
            modules.append(nn.GroupNorm(groups, out_channels))
        modules.append(nn.SiLU())
    return nn.Sequential(*modules)


class FeatureNet(nn.Module):
    """A small CNN classifier whose global-average-pooled last block is the FID feature.

    ``net(images)`` -> features ``[B, D]`` (a :class:`~difflab.eval.features.FeatureExtractor`);
    ``net.logits(images)`` -> ``{head name: logits [B, labels]}``;
    ``net(images, logits=True)`` gives the same dict (the Trainer calls the module itself).
    ``resize`` (default False) lets it resample square images of another size to
    ``config.image_size``; otherwise such images raise a ``ValueError`` saying what to do.
    """

    def __init__(self, config: FeatureNetConfig, resize: bool = False) -> None:
        super().__init__()
        self.config = config
        self.resize = resize
        widths = (config.in_channels, *config.channels)
        self.blocks = nn.ModuleList(
            _block(widths[i], widths[i + 1], config.layers_per_block, config.norm_groups)
            for i in range(len(config.channels))
        )
        self.heads = nn.ModuleDict(
            {h.name: nn.Linear(config.embedding_dim, len(h.labels)) for h in config.heads}
        )
        self.noise_embedding = (
            LogSNREmbedding(config.noise_features, config.channels[0], config.log_snr_min,
                            config.log_snr_max)
            if config.noise_aware
            else None
        )  # fmt: skip
        self.num_features = config.embedding_dim  # read by torchmetrics' metric classes

    @property
    def name(self) -> str:
        return self.config.name or "feature network"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check ``images`` against the network's input and resize them if allowed."""
        c = self.config
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"{self.name} takes images [N, C, H, W], got {shape}")
        n, channels, height, width = images.shape
        if channels != c.in_channels:
            kind = {1: "grey", 3: "RGB"}[c.in_channels]
            hint = (
                "convert colour images to grey (e.g. PIL .convert('L')) before extracting features"
                if c.in_channels == 1
                else "it was trained on colour images; compare colour images, or use a feature "
                "network of grey images"
            )
            raise ValueError(
                f"{self.name} takes {kind} images with {c.in_channels} channel(s), got {channels} "
                f"(shape {tuple(images.shape)}); {hint}"
            )
        if (height, width) == (c.image_size, c.image_size):
            return images
        if height != width:
            raise ValueError(
                f"{self.name} takes square {c.image_size}x{c.image_size} images, got {height}x"
                f"{width}; centre-crop them to a square first"
            )
        if not self.resize:
            raise ValueError(
                f"{self.name} takes {c.image_size}x{c.image_size} images, got {height}x{width}: "
                f"resize them to {c.image_size} px first, or load the network with resize=True "
                "(antialiased bilinear; `difflab eval` does this unless --no-resize)"
            )
        return nn.functional.interpolate(
            images, size=(c.image_size, c.image_size), mode="bilinear", antialias=True,
            align_corners=False,
        )  # fmt: skip

    def feature_map(
        self, images: torch.Tensor, log_snr=None, film: LogSNREmbedding | None = None
    ) -> torch.Tensor:
        """The last block's map ``[B, C, S / 2^(n-1), S / 2^(n-1)]``. A noise-aware network (or
        one given a ``film`` embedding: the CLIP image tower keeps its own) modulates its first
        block's output by each image's ``log_snr`` (a number or ``[B]``; None = clean)."""
        film = self.noise_embedding if film is None else film
        if log_snr is not None and film is None:
            raise ValueError(
                f"{self.name} is not noise-aware (config.noise_aware is false): call it without "
                "log_snr, on clean images, or train a noise-aware one (noise_aware = true)"
            )
        x = self.prepare(images).to(next(self.parameters()).dtype)
        for i, block in enumerate(self.blocks):
            x = block(nn.functional.avg_pool2d(x, 2) if i else x)  # [B, C_i, S / 2^i, S / 2^i]
            if i == 0 and film is not None:
                x = film.modulate(x, log_snr)
        return x

    def pooled(self, images: torch.Tensor, log_snr=None) -> torch.Tensor:
        """The global pool ``[B, D]`` of the last block (Inception's pool3), before scaling."""
        x = self.feature_map(images, log_snr)
        if self.config.pooling == "mean_max":
            return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return x.mean(dim=(2, 3))

    def embed(self, images: torch.Tensor, log_snr=None) -> torch.Tensor:
        """Features ``[B, D]``: the pool times ``config.feature_scale``, one number chosen after
        training so that training images have ``mean(x**2) = 1`` (KID's kernel
        ``(x.y / D + 1)^3`` assumes features of about unit size; FID only scales by its square,
        and precision/recall do not change)."""
        return self.pooled(images, log_snr) * self.config.feature_scale

    def forward(self, images: torch.Tensor, logits: bool = False, log_snr=None):
        if logits:
            return self.logits(images, log_snr)
        return self.embed(images, log_snr)

    def logits(self, images: torch.Tensor, log_snr=None) -> dict[str, torch.Tensor]:
        """``{head name: logits [B, labels]}`` (the heads read the unscaled pool); a noise-aware
        network takes each image's ``log_snr`` (None = clean)."""
        pooled = self.pooled(images, log_snr)
        return {name: head(pooled) for name, head in self.heads.items()}

    def head(self, name: str) -> Head:
        """The :class:`Head` called ``name``; the error lists the heads."""
        for h in self.config.heads:
            if h.name == name:
                return h
        raise ValueError(
            f"{self.name} has no head {name!r}; its heads are: "
            f"{', '.join(h.name for h in self.config.heads) or 'none'}"
        )

    def classifier(self, head: str) -> nn.Module:
        """A module ``images -> logits [B, labels]`` of one multi-class head, e.g. for
        :func:`~difflab.eval.metrics.inception_score` via ``extract_features``."""
        if self.head(head).kind != "multiclass":
            raise ValueError(
                f"head {head!r} of {self.name} is multi-label; the Inception Score needs a "
                "multi-class head"
            )
        return _HeadLogits(self, head)


class _HeadLogits(nn.Module):
    def __init__(self, net: FeatureNet, head: str) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.logits(images)[self.head]


# ---------------------------------------------------------------------------------- storage


def is_feature_network_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a feature network (a ``config.json`` naming :data:`CLASS_NAME`)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file() or not (Path(folder) / WEIGHTS_FILE).is_file():
        return False
    try:
        return json.loads(path.read_text()).get("_class_name") == CLASS_NAME
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def save_feature_network(
    net: FeatureNet, folder: str | Path, dtype: torch.dtype | None = None, extra: dict | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype`` if given, e.g.
    ``torch.float16`` for shipping) into ``folder``, atomically: the files are written into a
    hidden sibling folder that then replaces ``folder`` in one rename. An existing ``folder``
    must itself be a feature network folder (anything else is refused, never deleted).
    ``extra`` files (name -> text, e.g. a model card) are written alongside."""
    from difflab.storage import write_weights_folder

    return write_weights_folder(
        Path(folder), net, net.config.to_dict(), is_feature_network_folder, "feature network",
        dtype, extra,
    )  # fmt: skip


def load_feature_network(name_or_folder: str | Path, resize: bool = False) -> FeatureNet:
    """A shipped feature network by name (``shapes-features``, ``digits-features``; see
    :func:`difflab.zoo.list_feature_networks`) or a folder written by
    :func:`save_feature_network`, in float32, eval mode, gradients off.

    ``resize`` lets it take square images of another size (see :class:`FeatureNet`).
    Raises ``FileNotFoundError`` for an unknown name (listing the shipped ones) and
    ``ValueError`` for a folder whose config or weights do not match.
    """
    from difflab.zoo import resolve_feature_network

    folder = resolve_feature_network(name_or_folder)
    config_path = folder / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    config = FeatureNetConfig.from_dict(data, str(config_path))
    if not config.name:
        config = replace(config, name=folder.name)
    net = FeatureNet(config, resize=resize)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    expected = net.state_dict()
    missing, unexpected, misshaped = state_dict_differences(expected, tensors)
    if missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} does not match {config_path}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if misshaped:
        raise ValueError(
            f"{folder / WEIGHTS_FILE}: tensors of another shape than {config_path} needs: "
            f"{', '.join(misshaped[:5])}"
        )
    net.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return net.eval().requires_grad_(False)
