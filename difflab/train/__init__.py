"""Training: one accelerate-based Trainer plus objectives (see :func:`train`).

Typical use by a recipe::

    from difflab.train import TrainConfig, diffusion_objective, diffusion_sample_fn, train

    config = TrainConfig(max_steps=2000, batch_size=64, learning_rate=2e-4, warmup_steps=100,
                         ema_decay=0.999)            # or load_config("recipe.toml", "train")
    result = train(config, unet, diffusion_objective(schedule, cond_key="class_labels"),
                   dataset, "runs/digits", sample_fn=diffusion_sample_fn(schedule, (16, 1, 28, 28)),
                   resume=args.resume, overwrite=args.overwrite)
    result.ema_model.save_pretrained("runs/digits/unet")   # export: the recipe's job
"""

from difflab.train.checkpoint import latest_checkpoint, list_checkpoints, load_weights
from difflab.train.config import TrainConfig, load_config
from difflab.train.data import DataPosition, epoch_permutation
from difflab.train.ema import EMA
from difflab.train.objectives import Objective, diffusion_objective, model_output
from difflab.train.records import image_grid, plot_loss_curve, read_metrics, save_image_grid
from difflab.train.sampling import diffusion_sample_fn
from difflab.train.trainer import (
    TrainResult,
    check_run_dir,
    make_lr_scheduler,
    seeded_weights,
    train,
)

__all__ = [
    "EMA",
    "DataPosition",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "check_run_dir",
    "diffusion_objective",
    "diffusion_sample_fn",
    "epoch_permutation",
    "image_grid",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
    "load_weights",
    "make_lr_scheduler",
    "model_output",
    "plot_loss_curve",
    "read_metrics",
    "save_image_grid",
    "seeded_weights",
    "train",
]
