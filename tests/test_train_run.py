"""Whole runs: learning happens, records are written, run folders are protected."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn
from train_tiny import one_thread, tiny_config, tiny_images, tiny_model  # noqa: F401 (one_thread: autouse fixture)

from difflab.schedules import make_schedule
from difflab.train import diffusion_objective, diffusion_sample_fn, read_metrics, train


def test_loss_decreases_on_a_learnable_problem(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = x @ torch.randn(8, 2, generator=g)
    dataset = torch.utils.data.TensorDataset(x, y)

    def objective(model, batch, generator):
        inputs, targets = batch
        return nn.functional.mse_loss(model(inputs), targets)

    torch.manual_seed(0)
    config = tiny_config(
        max_steps=50,
        batch_size=16,
        learning_rate=0.1,
        warmup_steps=5,
        lr_schedule="constant",
        checkpoint_every=0,
        ema_decay=0.9,
    )
    result = train(config, nn.Linear(8, 2), objective, dataset, tmp_path)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.05 * first, (first, last)
    # the EMA model lags behind but has learned too
    with torch.no_grad():
        ema_loss = float(nn.functional.mse_loss(result.ema_model(x), y))
    assert ema_loss < 0.2 * first


def test_a_diffusion_run_writes_its_records(tmp_path):
    schedule = make_schedule(num_train_timesteps=100)
    config = tiny_config(
        max_steps=40,
        learning_rate=1e-2,
        checkpoint_every=20,
        sample_every=20,
        log_every=10,
        ema_decay=0.9,
    )
    result = train(
        config,
        tiny_model(),
        diffusion_objective(schedule),
        tiny_images(),
        tmp_path,
        sample_fn=diffusion_sample_fn(schedule, (4, 3, 8, 8), steps=4, seed=5),
    )
    assert sum(result.losses[-10:]) < sum(result.losses[:10])  # the denoiser learns something
    assert result.step == 40 and result.images_per_second > 0

    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"] == config.to_dict() and run["seed"] == config.seed
    assert {"torch", "diffusers", "accelerate", "difflab"} <= set(run["versions"])
    assert run["started"] and run["parameters"] > 0 and run["dataset_size"] == 36

    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    assert {"loss", "lr", "grad_norm", "images_per_s", "epoch"} <= set(metrics[0])
    assert metrics[-1]["loss"] == pytest.approx(sum(result.losses[30:]) / 10)

    with Image.open(tmp_path / "loss.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    for step in (20, 40):
        with Image.open(tmp_path / "samples" / f"step_{step:08d}.png") as im:
            assert im.size == (2 * 10 + 2, 2 * 10 + 2)  # 2x2 grid of 8x8 with 2px padding
            assert im.text["step"] == str(step) and im.text["sampler"] == "ddim"


def test_sampling_does_not_disturb_training(tmp_path):
    """sample_fn draws from the global RNG; training must not notice (same losses)."""

    def noisy_sample_fn(model, step, out_dir):
        torch.randn(100)
        model(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))

    config = tiny_config(max_steps=6, sample_every=2, checkpoint_every=0)
    a = train(
        config,
        tiny_model(),
        diffusion_objective(make_schedule()),
        tiny_images(),
        tmp_path / "a",
        sample_fn=noisy_sample_fn,
    )
    b = train(
        config, tiny_model(), diffusion_objective(make_schedule()), tiny_images(), tmp_path / "b"
    )
    assert a.losses == b.losses


def _quick(tmp_path, **kwargs):
    config = kwargs.pop("config", None) or tiny_config(max_steps=2, checkpoint_every=0)
    return train(
        config,
        tiny_model(),
        diffusion_objective(make_schedule()),
        tiny_images(),
        tmp_path,
        **kwargs,
    )


def test_a_folder_holding_a_different_run_is_refused(tmp_path):
    _quick(tmp_path)
    other = tiny_config(max_steps=2, checkpoint_every=0, learning_rate=0.5)
    with pytest.raises(FileExistsError) as err:
        _quick(tmp_path, config=other)
    message = str(err.value)
    assert "different run" in message and "learning_rate" in message
    assert "resume=True" in message and "overwrite=True" in message
    assert "--resume" in message and "--overwrite" in message
    with pytest.raises(FileExistsError, match="already holds this run"):
        _quick(tmp_path)  # the same config twice is refused too: nothing is silently mixed
    # resuming with a config that changes the training is refused, naming the key
    with pytest.raises(ValueError, match="learning_rate"):
        _quick(tmp_path, config=other, resume=True)


def test_overwrite_replaces_only_the_run_folder(tmp_path):
    run = tmp_path / "run"
    _quick(run)
    (run / "old_sample.png").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("neighbour")
    other = tiny_config(max_steps=3, checkpoint_every=0, learning_rate=0.5)
    result = _quick(run, config=other, overwrite=True)
    assert result.step == 3 and not (run / "old_sample.png").exists()
    assert json.loads((run / "run.json").read_text())["config"]["learning_rate"] == 0.5
    assert (tmp_path / "keep.txt").read_text() == "neighbour"

    # a non-empty folder that is not a difflab run is neither written into nor deleted
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"meow")
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(FileExistsError, match="not a difflab run"):
            _quick(stranger, **flags)
    assert [p.name for p in stranger.iterdir()] == ["cat.jpg"]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _quick(tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()
    _quick(tmp_path / "early", config=tiny_config(max_steps=2, checkpoint_every=0))
    for p in (tmp_path / "early" / "checkpoints").iterdir():  # killed before any checkpoint
        import shutil

        shutil.rmtree(p)
    with pytest.raises(FileNotFoundError, match="no checkpoint.*overwrite"):
        _quick(tmp_path / "early", resume=True)
    with pytest.raises(ValueError, match="contradict"):
        _quick(tmp_path / "early", resume=True, overwrite=True)


def test_a_nan_loss_stops_the_run(tmp_path):
    def bad(model, batch, generator):
        return model(batch[0], torch.zeros(len(batch[0]), dtype=torch.long)).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="step 1"):
        train(tiny_config(max_steps=3), tiny_model(), bad, tiny_images(), tmp_path)


class _Labelled(torch.utils.data.Dataset):
    """Dict examples, as recipes produce them: an image and its class label."""

    def __init__(self, n: int = 16) -> None:
        self.images = tiny_images(n).tensors[0]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "class_labels": torch.tensor(i % 3)}


class _ClassDenoiser(nn.Module):
    """Class-conditional, called like diffusers' UNet2DModel (``model(x, t, class_labels=...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()
        self.embed = nn.Embedding(3, 3)

    def forward(self, x, t, class_labels):
        # like diffusers' UNet2DOutput: the prediction is in ``.sample``
        return SimpleNamespace(sample=self.net(x + self.embed(class_labels)[:, :, None, None], t))


def test_dict_batches_with_class_labels_train_and_resume(tmp_path):
    def unet():
        torch.manual_seed(0)
        return _ClassDenoiser()

    objective = diffusion_objective(make_schedule(), cond_key="class_labels")
    config = tiny_config(max_steps=4, checkpoint_every=2, batch_size=4)
    straight = train(config, unet(), objective, _Labelled(), tmp_path / "a")
    with pytest.raises(Crash):
        train(config, unet(), _crash_after(objective, 3), _Labelled(), tmp_path / "b")
    resumed = train(config, unet(), objective, _Labelled(), tmp_path / "b", resume=True)
    assert resumed.losses == straight.losses
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the class labels reach the model: other labels give another loss
    batch = {
        k: torch.stack([_Labelled()[i][k] for i in range(4)]) for k in ("image", "class_labels")
    }
    other = {**batch, "class_labels": (batch["class_labels"] + 1) % 3}
    with torch.no_grad():
        losses = [
            float(objective(resumed.model, b, torch.Generator().manual_seed(0)))
            for b in (batch, other)
        ]
    assert losses[0] != losses[1]
    with pytest.raises(KeyError, match="no 'pixels'"):
        diffusion_objective(make_schedule(), image_key="pixels")(resumed.model, batch, None)


class Crash(Exception):
    pass


def _crash_after(objective, calls: int):
    count = {"n": 0}

    def wrapped(model, batch, generator):
        count["n"] += 1
        if count["n"] > calls:
            raise Crash
        return objective(model, batch, generator)

    return wrapped
