"""The training configuration: one flat, readable dataclass (in the spirit of nanoGPT's
``train.py`` globals), loadable from a small TOML file with unknown keys and wrong types refused.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from difflab.typed_config import check_value, from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

LR_SCHEDULES = ("constant", "cosine", "linear")
MIXED_PRECISIONS = ("no", "fp16", "bf16")

# Keys that may change between a run and its resumption: they change how long it runs and what
# it writes, not the update rule. (A longer max_steps also stretches a cosine or linear decay
# from the resume point on; for a bit-identical continuation keep max_steps as it was.)
RESUMABLE_CHANGES = (
    "max_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "log_every",
    "num_workers",
)


@dataclass
class TrainConfig:
    """Everything the Trainer needs to know, with defaults for a small CPU run.

    Steps count optimizer updates. One update consumes ``grad_accum_steps`` micro-batches of
    ``batch_size`` examples on each of the ``num_processes`` accelerate processes, so the
    effective batch is ``batch_size * grad_accum_steps * num_processes``.
    """

    # --- length and batch ---
    max_steps: int = 1000  # optimizer updates in total (a resumed run continues up to this)
    batch_size: int = 32  # examples per micro-batch per process
    grad_accum_steps: int = 1  # micro-batches accumulated per update (accelerate handles it)
    # --- optimizer: AdamW (Loshchilov & Hutter 2019) ---
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    # --- learning-rate schedule: linear warm-up (Goyal et al. 2017) then constant / cosine
    # (Loshchilov & Hutter 2017, SGDR without restarts) / linear decay to 0 at max_steps ---
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float = 1.0  # max global L2 norm of the gradients; 0 turns clipping off
    # --- EMA of the weights (Polyak & Juditsky 1992; DDPM uses 0.9999, EDM a half-life) ---
    ema_decay: float = 0.0  # 0 turns EMA off
    ema_warmup: bool = True  # decay_k = min(ema_decay, (1 + k) / (10 + k)) for update k
    # --- hardware ---
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16", passed to accelerate.Accelerator
    num_workers: int = 0  # DataLoader worker processes
    # --- bookkeeping ---
    checkpoint_every: int = 500  # also always written at max_steps; 0 = only at the end
    keep_checkpoints: int = 2  # how many of the latest checkpoints to keep on disk
    sample_every: int = 500  # call sample_fn every N steps (and at the end); 0 = never
    log_every: int = 10  # write a metrics.jsonl line every N steps
    seed: int = 0

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (JSON/TOML friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build a config from a dict, refusing unknown keys (the message lists the valid ones)
        and values of the wrong type; ``source`` (e.g. a file name) prefixes the messages."""
        return from_dict(cls, values, source)


def load_config(path: str | Path, section: str | None = None, **overrides: Any) -> TrainConfig:
    """Read a :class:`TrainConfig` from a TOML file.

    Args:
        path: the TOML file. Its top-level keys are the config fields, unless ``section``
            names a table (e.g. ``"train"`` in a recipe that also has ``[model]`` and ``[data]``).
        section: the table holding the training keys, or None for the top level.
        overrides: values that replace the file's (e.g. ``max_steps=10`` from the command line).

    Raises:
        ValueError: on an unknown key (the message lists the valid ones), a missing section,
            a value of the wrong type or out of range.
    """
    path = Path(path)
    with path.open("rb") as f:
        data = tomllib.load(f)
    if section is not None:
        if section not in data or not isinstance(data[section], dict):
            raise ValueError(f"{path}: no [{section}] table in this file.")
        data = data[section]
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(data, source=str(path))


def validate(config: TrainConfig) -> None:
    """Check ranges and choices; raise ValueError naming the field and what is allowed."""
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(config):
        check_value(f.name, getattr(config, f.name), hints[f.name], "TrainConfig")

    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ValueError(f"TrainConfig: {message}")

    c = config
    need(c.max_steps >= 1, f"max_steps must be >= 1, got {c.max_steps}.")
    need(c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}.")
    need(c.grad_accum_steps >= 1, f"grad_accum_steps must be >= 1, got {c.grad_accum_steps}.")
    need(c.learning_rate > 0, f"learning_rate must be > 0, got {c.learning_rate}.")
    need(c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}.")
    for b in ("adam_beta1", "adam_beta2"):
        need(0 <= getattr(c, b) < 1, f"{b} must be in [0, 1), got {getattr(c, b)}.")
    need(c.adam_eps > 0, f"adam_eps must be > 0, got {c.adam_eps}.")
    need(c.warmup_steps >= 0, f"warmup_steps must be >= 0, got {c.warmup_steps}.")
    need(
        c.lr_schedule in LR_SCHEDULES,
        f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {c.lr_schedule!r}.",
    )
    need(c.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {c.grad_clip}.")
    need(0 <= c.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {c.ema_decay}.")
    need(
        c.mixed_precision in MIXED_PRECISIONS,
        f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {c.mixed_precision!r}.",
    )
    need(c.num_workers >= 0, f"num_workers must be >= 0, got {c.num_workers}.")
    for k in ("checkpoint_every", "sample_every"):
        need(getattr(c, k) >= 0, f"{k} must be >= 0 (0 = only at the end), got {getattr(c, k)}.")
    need(c.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {c.keep_checkpoints}.")
    need(c.log_every >= 1, f"log_every must be >= 1, got {c.log_every}.")
    need(c.seed >= 0, f"seed must be >= 0, got {c.seed}.")
