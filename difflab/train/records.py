"""What a run writes next to its checkpoints: ``run.json``, ``metrics.jsonl``, ``loss.png``
and sample grids."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss.png"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import accelerate
    import diffusers

    import difflab

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "difflab": difflab.__version__,
        "platform": sys.platform,
    }


def append_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl``."""
    with Path(path).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: str | Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint a run resumes from)."""
    path = Path(path)
    if path.exists():
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def plot_loss_curve(losses: list[float], path: str | Path, title: str = "training loss") -> None:
    """Save the per-step loss and its running mean (window ~ 2% of the run) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(losses) + 1))
    window = max(1, len(losses) // 50)
    smooth, acc = [], 0.0
    for i, v in enumerate(losses):
        acc += v
        if i >= window:
            acc -= losses[i - window]
        smooth.append(acc / min(i + 1, window))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="tab:blue", linewidth=1.5, label=f"mean of {window}")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """Tile a batch of images (NCHW, float in [-1, 1], C = 1 or 3) into one PIL image.

    Args:
        images: [N, C, H, W] tensor in [-1, 1]; values outside are clipped.
        nrow: images per row (default ceil(sqrt(N))).
        padding: pixels of black between tiles.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got shape {tuple(images.shape)}.")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round() / 255.0
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if c == 1 else array)  # "L" or "RGB"


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save :func:`image_grid` of ``images`` as a PNG, with ``metadata`` in PNG text chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), value if isinstance(value, str) else json.dumps(value))
    image_grid(images, nrow).save(path, pnginfo=info)
    return path
