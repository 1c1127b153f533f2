"""The Trainer's parts: EMA, LR warm-up and schedule, gradient clipping, optimizer state files,
data order, image grids."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from train_tiny import one_thread, tiny_config  # noqa: F401 (one_thread: autouse fixture)

from difflab.train import (
    EMA,
    DataPosition,
    epoch_permutation,
    image_grid,
    make_lr_scheduler,
    read_metrics,
    save_image_grid,
    train,
)
from difflab.train.checkpoint import optimizer_state_from_files, optimizer_state_to_files
from difflab.train.data import epoch_batches


def test_ema_update_follows_its_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    model.register_buffer("count", torch.zeros(()))
    ema = EMA(model, decay=0.9, warmup=False)
    shadow = {k: v.clone() for k, v in ema.shadow.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.count += 1
        ema.update(model)
        for name, p in model.named_parameters():
            shadow[name] = 0.9 * shadow[name] + 0.1 * p.detach()
            torch.testing.assert_close(
                ema.shadow.state_dict()[name], shadow[name], rtol=0, atol=1e-6
            )
    assert ema.shadow.count == model.count == 3  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.shadow.parameters())


def test_ema_warmup_decay():
    ema = EMA(nn.Linear(1, 1), decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(nn.Linear(1, 1))
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999
    # with warm-up, the first update takes 90% of the live weights
    model = nn.Linear(1, 1)
    ema = EMA(nn.Linear(1, 1), decay=0.999)
    old = ema.shadow.weight.clone()
    ema.update(model)
    torch.testing.assert_close(ema.shadow.weight, 0.1 * old + 0.9 * model.weight.detach())


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_warmup_then_schedule(schedule):
    config = tiny_config(max_steps=20, warmup_steps=4, learning_rate=1.0, lr_schedule=schedule)
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    sched = make_lr_scheduler(opt, config)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])  # linear warm-up over 4 steps
    after = {
        "constant": [1.0, 1.0],
        "cosine": [math.cos(math.pi * 4 / 16 / 2) ** 2, math.cos(math.pi * 12 / 16 / 2) ** 2],
        "linear": [12 / 16, 4 / 16],
    }[schedule]
    assert [lrs[8], lrs[16]] == pytest.approx(after)


def test_the_trainer_logs_the_warmup_lr(tmp_path):
    config = tiny_config(
        max_steps=6,
        warmup_steps=4,
        learning_rate=1e-3,
        lr_schedule="constant",
        log_every=1,
        checkpoint_every=0,
    )
    train(config, nn.Linear(4, 1), _regression_objective, _regression_data(), tmp_path)
    # the LR each update used: warm-up from 0 (diffusers' convention), then constant
    assert [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl")] == pytest.approx(
        [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]
    )


def _regression_data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    w = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    return torch.utils.data.TensorDataset(x, x @ w.T)


def _regression_objective(model, batch, generator):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize("clip", [0.01, 0.0])
def test_gradient_clipping_caps_the_norm(tmp_path, clip):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(
            float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            )
        )

    handle = register_optimizer_step_pre_hook(record)
    try:
        torch.manual_seed(0)
        config = tiny_config(
            max_steps=5,
            grad_clip=clip,
            warmup_steps=0,
            ema_decay=0.0,
            log_every=1,
            checkpoint_every=0,
        )
        train(config, nn.Linear(4, 1), _regression_objective, _regression_data(), tmp_path)
    finally:
        handle.remove()
    logged = [r["grad_norm"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(norms) == 5
    assert min(logged) > 0.1  # the unclipped norms are far above the cap
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:
        assert norms == pytest.approx(logged)  # no clipping: the optimizer sees the raw norm


def test_optimizer_state_round_trips_through_files():
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_files(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    rebuilt = optimizer_state_from_files(tensors, meta)
    fresh = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.5)
    fresh.load_state_dict(rebuilt)
    assert fresh.param_groups[0]["betas"] == (0.8, 0.9)
    assert fresh.param_groups[0]["lr"] == 0.1
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        for k in a:
            assert torch.equal(a[k], b[k])


def test_data_order_is_a_seeded_permutation_per_epoch():
    p0, p1 = epoch_permutation(10, seed=1, epoch=0), epoch_permutation(10, seed=1, epoch=1)
    assert sorted(p0.tolist()) == list(range(10)) and not torch.equal(p0, p1)
    assert torch.equal(p0, epoch_permutation(10, seed=1, epoch=0))
    batches = epoch_batches(10, 3, seed=1, position=DataPosition(0, 3))
    assert [b for _, b in batches] == [p0[3:6].tolist(), p0[6:9].tolist()]
    assert [pos for pos, _ in batches] == [DataPosition(0, 6), DataPosition(0, 9)]
    # fewer than a batch left: the next call starts the next epoch
    nxt = epoch_batches(10, 3, seed=1, position=DataPosition(0, 9))
    assert nxt[0] == (DataPosition(1, 3), p1[:3].tolist())
    # two processes take the two halves of each global batch
    r0 = epoch_batches(10, 2, seed=1, position=DataPosition(), rank=0, world_size=2)
    r1 = epoch_batches(10, 2, seed=1, position=DataPosition(), rank=1, world_size=2)
    assert r0[0][1] + r1[0][1] == p0[:4].tolist()
    with pytest.raises(ValueError, match="fewer than one global batch"):
        epoch_batches(3, 4, seed=0, position=DataPosition())


def test_image_grid(tmp_path):
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 3, 4, 4)
    grid = image_grid(images, nrow=3, padding=1)
    assert grid.size == (3 * 5 + 1, 2 * 5 + 1) and grid.mode == "RGB"
    assert grid.getpixel((1, 1)) == (0, 0, 0) and grid.getpixel((6, 6)) == (255, 255, 255)
    assert grid.getpixel((11, 1)) == (128, 128, 128)  # 0.0 -> mid-grey
    assert grid.getpixel((0, 0)) == (0, 0, 0)  # padding
    path = save_image_grid(images[:, :1], tmp_path / "g.png", metadata={"step": 3, "note": "x"})
    with Image.open(path) as im:
        assert im.mode == "L" and im.text == {"step": "3", "note": "x"}
    with pytest.raises(ValueError, match="NCHW|N, 1 or 3"):
        image_grid(torch.zeros(2, 4, 4))
