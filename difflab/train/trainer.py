"""The Trainer: one training loop on HuggingFace accelerate for every difflab recipe.

Read :func:`train` top to bottom: set up the run folder, build the optimizer and the
learning-rate schedule, hand them to accelerate, restore a checkpoint if resuming, then loop:
micro-batches -> objective -> backward -> clip -> step -> EMA -> log / checkpoint / sample.

The same code runs on one CPU process (as in the tests), on one GPU, and on many GPUs under
``accelerate launch``: accelerate places the model, wraps it for DDP and mixed precision, and
reduces the loss for logging; the Trainer shards the data itself (see
:mod:`difflab.train.data`) so that the data position is an exact, saveable pair of integers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from diffusers.optimization import get_scheduler
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from difflab.train.checkpoint import (
    CHECKPOINT_DIR,
    begin_checkpoint,
    checkpoint_name,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_tensors,
    optimizer_state_from_files,
    optimizer_state_to_files,
    read_json,
    rng_state,
    save_tensors,
    set_rng_state,
    write_json,
)
from difflab.train.config import RESUMABLE_CHANGES, TrainConfig
from difflab.train.data import DataPosition, data_stream
from difflab.train.ema import EMA
from difflab.train.objectives import Objective
from difflab.train.records import (
    LOSS_CURVE_FILE,
    METRICS_FILE,
    RUN_FILE,
    append_metrics,
    plot_loss_curve,
    truncate_metrics,
    versions,
)

SampleFn = Callable[[nn.Module, int, Path], Any]

# The objective's generator is seeded away from the global seed so that its noise is not the
# same stream as, say, dropout masks drawn from the global generator.
_GENERATOR_SEED_OFFSET = 0x5EED_D1FF


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model, unwrapped from accelerate (the object passed in, updated).
        ema_model: the EMA copy (sample from this), or None when ``ema_decay`` is 0.
        step: optimizer updates done in total (including those before a resume).
        losses: the loss of every update since step 1 (restored from the checkpoint on resume).
        out_dir: the run folder.
        checkpoint: the last checkpoint written or resumed from, if any.
        seconds: wall time of this call.
        total_seconds: wall time of the whole run up to ``step``: this call's plus, after a
            resume, that of the calls before it up to the checkpoint resumed from (time spent
            after the last checkpoint of an interrupted call is lost work and not counted).
        images_per_second: examples processed per second in this call (all processes).
    """

    model: nn.Module
    ema_model: nn.Module | None
    step: int
    losses: list[float] = field(repr=False)
    out_dir: Path
    checkpoint: Path | None
    seconds: float
    total_seconds: float
    images_per_second: float


def train(
    config: TrainConfig,
    model: nn.Module,
    objective: Objective,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    sample_fn: SampleFn | None = None,
    resume: bool = False,
    overwrite: bool = False,
    collate_fn: Callable | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``objective`` over ``dataset``; write everything to ``out_dir``.

    Args:
        config: the :class:`TrainConfig`.
        model: an initialised ``nn.Module``; its parameters with ``requires_grad`` are trained
            (freeze a teacher or a text encoder inside it with ``requires_grad_(False)``). If it
            has a method ``after_optimizer_step()``, that is called after every optimizer update
            (before the EMA update): state it changes there, kept in the module's parameters or
            buffers (a target network, an update counter), is checkpointed with the model, so a
            resumed run continues exactly.
        objective: ``objective(model, batch, generator) -> scalar loss``, e.g.
            :func:`difflab.train.diffusion_objective`. All its randomness must come from
            ``generator`` (or the global RNGs), which the Trainer seeds and checkpoints.
            ``model`` is the accelerate-prepared model (DDP-wrapped on several GPUs): call it,
            rather than its sub-modules or methods, so gradients are synchronised - put a
            recipe's whole computation in ``forward``.
        dataset: a map-style dataset (``len`` and ``__getitem__``); batches are collated by
            ``collate_fn`` (default: torch's) and moved to the accelerator's device.
        out_dir: the run folder (created). Holds ``run.json``, ``metrics.jsonl``, ``loss.png``,
            ``checkpoints/step_XXXXXXXX/`` and whatever ``sample_fn`` writes.
        sample_fn: ``sample_fn(model, step, out_dir)``, called on the main process every
            ``sample_every`` steps and at the end, with the EMA model if there is one (else the
            model), in eval mode under ``torch.no_grad``. Its use of the global RNGs does not
            disturb training (they are saved before and restored after the call).
        resume: continue from the latest checkpoint in ``out_dir`` (exactly: same parameters,
            EMA, optimizer, schedule, data position and RNG states as an uninterrupted run).
        overwrite: delete an earlier run in ``out_dir`` (a folder with ``run.json``) and start
            afresh.
        collate_fn: passed to the DataLoader.

    Returns:
        a :class:`TrainResult`.

    Raises:
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set,
            or holds other files.
        FileNotFoundError: ``resume`` with no checkpoint in ``out_dir``.
        ValueError: ``resume`` with a config that differs in keys that change the training.
        FloatingPointError: the loss became NaN or infinite.
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    if not hasattr(dataset, "__len__"):
        raise TypeError("the Trainer needs a map-style dataset with __len__ and __getitem__.")
    check_run_dir(out_dir, config, resume=resume, overwrite=overwrite)

    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and world == 1:  # e.g. torchrun on CPU without ACCELERATE_USE_CPU=1
        raise RuntimeError(
            f"{launched} processes were launched but accelerate sees only this one, so each "
            "would train alone and they would overwrite each other's checkpoints. Launch with "
            "`accelerate launch` on GPUs; on CPUs set ACCELERATE_USE_CPU=1 (e.g. with torchrun)."
        )
    is_main = accelerator.is_main_process
    if is_main:
        _start_run_dir(out_dir, config, resume, overwrite, model, len(dataset), accelerator)
    accelerator.wait_for_everyone()

    # --- seeds: global RNGs (dropout, augmentations) per process, and the objective's own ---
    set_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(_GENERATOR_SEED_OFFSET + 1000 * config.seed + rank)

    # --- optimizer, LR schedule, accelerate ---
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True to train.")
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    lr_scheduler = make_lr_scheduler(optimizer, config, num_processes=world)
    # The EMA copy is taken before prepare(), which patches the model's forward for mixed
    # precision; the shadow is only ever called for sampling, in full precision.
    ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay > 0 else None
    if ema is not None:
        ema.shadow.to(accelerator.device)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    raw_model = accelerator.unwrap_model(model)

    # --- resume ---
    step, position, losses = 0, DataPosition(), []
    earlier_seconds = 0.0  # the run's wall time before this call (up to the checkpoint)
    checkpoint: Path | None = None
    if resume:
        checkpoint = latest_checkpoint(out_dir / CHECKPOINT_DIR)
        assert checkpoint is not None  # check_run_dir made sure
        step, position, losses, earlier_seconds = _load_checkpoint(
            checkpoint, accelerator, raw_model, optimizer, lr_scheduler, ema, generator
        )
        if is_main:
            truncate_metrics(out_dir / METRICS_FILE, step)

    # --- the loop ---
    stream = data_stream(
        dataset,
        config.batch_size,
        config.seed,
        position,
        rank=rank,
        world_size=world,
        num_workers=config.num_workers,
        collate_fn=collate_fn,
        pin_memory=accelerator.device.type == "cuda",
    )
    images_per_update = config.batch_size * config.grad_accum_steps * world
    start_step, loop_start = step, time.perf_counter()
    images_per_s: float | None = None  # smoothed throughput for the progress bar and the log
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not is_main,
        dynamic_ncols=True,
    )
    model.train()
    while step < config.max_steps:
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=accelerator.device)
        grad_norm = float("nan")
        lr = lr_scheduler.get_last_lr()[0]  # the learning rate of this update
        for _ in range(config.grad_accum_steps):
            position, batch = next(stream)
            batch = send_to_device(batch, accelerator.device)
            with accelerator.accumulate(model):
                loss = objective(model, batch, generator)
                accelerator.backward(loss)
                loss_sum += loss.detach().float()
                if accelerator.sync_gradients:
                    # clip_grad_norm_ returns the norm before clipping; inf = measure only
                    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
                    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if not accelerator.optimizer_step_was_skipped:
            after_update = getattr(raw_model, "after_optimizer_step", None)
            if after_update is not None:
                after_update()  # e.g. consistency distillation's EMA target network
            if ema is not None:
                ema.update(raw_model)
        step += 1
        loss_value = float(accelerator.reduce(loss_sum / config.grad_accum_steps, "mean"))
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"the loss is {loss_value} at step {step}; lower the learning rate or check the "
                f"data. The last checkpoint is {latest_checkpoint(out_dir / CHECKPOINT_DIR)}."
            )
        losses.append(loss_value)
        rate = images_per_update / max(time.perf_counter() - t0, 1e-9)
        images_per_s = rate if images_per_s is None else 0.9 * images_per_s + 0.1 * rate
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images_per_s:.1f}")

        if is_main and (step % config.log_every == 0 or step == config.max_steps):
            window = losses[(step - 1) // config.log_every * config.log_every : step]
            append_metrics(
                out_dir / METRICS_FILE,
                {
                    "step": step,
                    "loss": sum(window) / len(window),  # mean since the previous line
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "epoch": position.epoch,
                    "images_per_s": images_per_s,
                    "seconds": earlier_seconds + time.perf_counter() - wall_start,
                },
            )
        if step == config.max_steps or (
            config.checkpoint_every and step % config.checkpoint_every == 0
        ):
            checkpoint = _save_checkpoint(
                out_dir,
                step,
                position,
                losses,
                config,
                accelerator,
                raw_model,
                optimizer,
                lr_scheduler,
                ema,
                generator,
                earlier_seconds + time.perf_counter() - wall_start,
            )
            if is_main:
                plot_loss_curve(losses, out_dir / LOSS_CURVE_FILE)
        if (
            sample_fn is not None
            and is_main
            and (
                step == config.max_steps
                or (config.sample_every and step % config.sample_every == 0)
            )
        ):
            _call_sample_fn(sample_fn, ema.shadow if ema else raw_model, step, out_dir)
    bar.close()
    accelerator.wait_for_everyone()

    seconds = time.perf_counter() - wall_start
    done = step - start_step
    return TrainResult(
        model=raw_model,
        ema_model=ema.shadow if ema else None,
        step=step,
        losses=losses,
        out_dir=out_dir,
        checkpoint=checkpoint,
        seconds=seconds,
        total_seconds=earlier_seconds + seconds,
        images_per_second=done * images_per_update / max(time.perf_counter() - loop_start, 1e-9),
    )


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, num_processes: int = 1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` (Goyal et al. 2017), then ``config.lr_schedule``.

    Uses ``diffusers.optimization.get_scheduler``: "constant" (after warm-up), "cosine"
    (half a cosine to 0 at ``max_steps``, Loshchilov & Hutter 2017) or "linear" (to 0).
    accelerate's prepared scheduler steps ``num_processes`` times per update (it assumes
    per-process step counts), so the step counts are scaled the same way, as diffusers'
    training scripts do.
    """
    name = {"constant": "constant_with_warmup"}.get(config.lr_schedule, config.lr_schedule)
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=config.warmup_steps * num_processes,
        num_training_steps=config.max_steps * num_processes,
    )


# ---------------------------------------------------------------------------------------------
# the run folder


def check_run_dir(out_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in ``out_dir`` when that would mix or lose runs (reads only).

    - ``resume`` needs a checkpoint there and a config that differs at most in
      :data:`~difflab.train.config.RESUMABLE_CHANGES`;
    - a folder holding a run (``run.json``) needs ``resume`` or ``overwrite``;
    - a non-empty folder that is not a difflab run is never written into or deleted.
    """
    out_dir = Path(out_dir)
    run_file = out_dir / RUN_FILE
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other; pass one of them.")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder.")
    if resume:
        if latest_checkpoint(out_dir / CHECKPOINT_DIR) is None:
            raise FileNotFoundError(
                f"cannot resume: there is no checkpoint in {out_dir / CHECKPOINT_DIR}. "
                "Start a new run (without resume=True / --resume), or pass overwrite=True "
                "(--overwrite) to replace a run that stopped before its first checkpoint."
            )
        if run_file.exists():
            changed = {
                k: v
                for k, v in _config_diff(
                    read_json(run_file).get("config", {}), config.to_dict()
                ).items()
                if k not in RESUMABLE_CHANGES
            }
            if changed:
                raise ValueError(
                    f"cannot resume the run in {out_dir}: its config differs in "
                    f"{_describe_diff(changed)}. Only {', '.join(RESUMABLE_CHANGES)} may "
                    "change on resume; restore the others or start over with overwrite=True."
                )
        return
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not run_file.exists():
        raise FileExistsError(
            f"{out_dir} is not empty and is not a difflab run folder (no {RUN_FILE}); refusing "
            "to write into it or delete it. Choose a new or empty folder."
        )
    if overwrite:
        _check_deletable(out_dir)
        return
    diff = _config_diff(read_json(run_file).get("config", {}), config.to_dict())
    what = f"a different run (config differs in {_describe_diff(diff)})" if diff else "this run"
    n = len(list_checkpoints(out_dir / CHECKPOINT_DIR))
    raise FileExistsError(
        f"{out_dir} already holds {what}, with {n} checkpoint(s). Pass resume=True (--resume) "
        "to continue it, or overwrite=True (--overwrite) to delete it and start afresh, or "
        "choose another folder."
    )


def _config_diff(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _describe_diff(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in diff.items())


def _check_deletable(out_dir: Path) -> None:
    path, cwd, home = out_dir.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if path == Path(path.anchor) or path == home or path == cwd or path in cwd.parents:
        raise ValueError(f"refusing to delete {path}: it is the root, home or working folder.")


def _start_run_dir(
    out_dir: Path,
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    model: nn.Module,
    dataset_size: int,
    accelerator: Accelerator,
) -> None:
    """Create (or, with ``overwrite``, replace) the run folder and write/update ``run.json``."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    run_file = out_dir / RUN_FILE
    if resume:
        run = read_json(run_file) if run_file.exists() else {}
        run["config"] = config.to_dict()
        run.setdefault("resumed", []).append(
            {
                "time": now,
                "from": str(latest_checkpoint(out_dir / CHECKPOINT_DIR)),
                "versions": versions(),
                "num_processes": accelerator.num_processes,
            }
        )
    else:
        if overwrite and run_file.exists():
            shutil.rmtree(out_dir)  # check_run_dir verified it is a difflab run folder
        out_dir.mkdir(parents=True, exist_ok=True)
        run = {
            "config": config.to_dict(),
            "seed": config.seed,
            "started": now,
            "versions": versions(),
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "mixed_precision": config.mixed_precision,
            "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "dataset_size": dataset_size,
            "resumed": [],
        }
    tmp = run_file.with_suffix(".json.tmp")
    write_json(tmp, run)
    os.replace(tmp, run_file)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _save_checkpoint(
    out_dir: Path,
    step: int,
    position: DataPosition,
    losses: list[float],
    config: TrainConfig,
    accelerator: Accelerator,
    raw_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: EMA | None,
    generator: torch.Generator,
    train_seconds: float,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically (see :mod:`difflab.train.checkpoint`).

    Every process writes its RNG states (``rng_rank{r}``); the main process writes the rest
    and commits the folder. Model, EMA and optimizer state are the same on every process (DDP).
    """
    root = out_dir / CHECKPOINT_DIR
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        begin_checkpoint(root, step)
    accelerator.wait_for_everyone()
    try:
        rng_tensors, rng_meta = rng_state(generator)
        rank = accelerator.process_index
        save_tensors(tmp / f"rng_rank{rank}.safetensors", rng_tensors)
        write_json(tmp / f"rng_rank{rank}.json", rng_meta)
        accelerator.wait_for_everyone()
        final = root / checkpoint_name(step)
        if accelerator.is_main_process:
            save_model(raw_model, str(tmp / "model.safetensors"))
            if ema is not None:
                save_model(ema.shadow, str(tmp / "ema.safetensors"))
            opt_tensors, opt_meta = optimizer_state_to_files(optimizer.state_dict())
            save_tensors(tmp / "optimizer.safetensors", opt_tensors)
            write_json(tmp / "optimizer.json", opt_meta)
            save_tensors(
                tmp / "history.safetensors", {"loss": torch.tensor(losses, dtype=torch.float64)}
            )
            scaler = accelerator.scaler
            write_json(
                tmp / "state.json",
                {
                    "step": step,
                    "data_position": {"epoch": position.epoch, "index": position.index},
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "grad_scaler": scaler.state_dict() if scaler is not None else None,
                    "ema": None
                    if ema is None
                    else {"decay": ema.decay, "warmup": ema.warmup, "num_updates": ema.num_updates},
                    "num_processes": accelerator.num_processes,
                    "train_seconds": train_seconds,  # the run's wall time to this step
                    "config": config.to_dict(),
                    "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                },
            )
            final = commit_checkpoint(tmp, config.keep_checkpoints)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(
    folder: Path,
    accelerator: Accelerator,
    raw_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: EMA | None,
    generator: torch.Generator,
) -> tuple[int, DataPosition, list[float], float]:
    """Restore everything :func:`_save_checkpoint` wrote; return (step, position, losses, the
    run's wall time up to the checkpoint)."""
    state = read_json(folder / "state.json")
    # safetensors names CPU devices "cpu" only (accelerate may say "cpu:0" in multi-CPU runs)
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    load_model(raw_model, str(folder / "model.safetensors"), device=device)
    if ema is not None:
        if state["ema"] is None or not (folder / "ema.safetensors").exists():
            raise ValueError(f"{folder} holds no EMA weights but ema_decay > 0.")
        load_model(ema.shadow, str(folder / "ema.safetensors"), device=device)
        ema.num_updates = state["ema"]["num_updates"]
    optimizer.load_state_dict(
        optimizer_state_from_files(
            load_tensors(folder / "optimizer.safetensors"), read_json(folder / "optimizer.json")
        )
    )
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if accelerator.scaler is not None and state["grad_scaler"] is not None:
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    rank = accelerator.process_index
    rng_file = folder / f"rng_rank{rank}.safetensors"
    if state["num_processes"] != accelerator.num_processes or not rng_file.exists():
        warnings.warn(
            f"{folder} was written by {state['num_processes']} process(es), this run has "
            f"{accelerator.num_processes}: RNG states are not restored on every process, so "
            "the continuation is not bit-identical to an uninterrupted run.",
            stacklevel=3,
        )
    if rng_file.exists():
        set_rng_state(load_tensors(rng_file), read_json(folder / f"rng_rank{rank}.json"), generator)
    losses = load_tensors(folder / "history.safetensors")["loss"].tolist()
    pos = state["data_position"]
    if "train_seconds" not in state:
        warnings.warn(
            f"{folder} predates wall-time tracking: the run's train_seconds count from this "
            "resume only.",
            stacklevel=3,
        )
    earlier = float(state.get("train_seconds", 0.0))
    return state["step"], DataPosition(pos["epoch"], pos["index"]), losses, earlier


# ---------------------------------------------------------------------------------------------
# sampling


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without disturbing the global RNG states (torch, CUDA, numpy, random)."""
    tensors, meta = rng_state()
    try:
        yield
    finally:
        set_rng_state(tensors, meta)


@contextlib.contextmanager
def seeded_weights(seed: int) -> Iterator[None]:
    """Run a block (a network's construction) with torch's global generator seeded with
    ``seed``, restoring its state afterwards. torch seeds that generator from the operating
    system in every process, so weights initialised outside such a block differ between two
    runs of the same command."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _call_sample_fn(sample_fn: SampleFn, model: nn.Module, step: int, out_dir: Path) -> None:
    was_training = model.training
    model.eval()
    try:
        with isolated_rng(), torch.no_grad():
            sample_fn(model, step, out_dir)
    finally:
        model.train(was_training)
