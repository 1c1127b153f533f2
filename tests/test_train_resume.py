"""Exact resume and atomic, pickle-free checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_tiny import one_thread, tiny_config, tiny_images, tiny_model  # noqa: F401 (one_thread: autouse fixture)

import difflab.train.trainer as trainer_module
from difflab.schedules import make_schedule
from difflab.train import diffusion_objective, latest_checkpoint, list_checkpoints, train
from difflab.train.checkpoint import write_checkpoint
from difflab.train.records import read_metrics


def _objective():
    return diffusion_objective(make_schedule(num_train_timesteps=100))


class Crash(Exception):
    pass


def _crashing(objective, after_calls: int):
    """The objective, raising Crash on call number ``after_calls + 1`` (a killed run)."""
    calls = {"n": 0}

    def wrapped(model, batch, generator):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Crash
        return objective(model, batch, generator)

    return wrapped


def _state(result, out: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(out / "checkpoints")
    return {
        **{f"model.{k}": v.clone() for k, v in result.model.state_dict().items()},
        **{f"ema.{k}": v.clone() for k, v in result.ema_model.state_dict().items()},
        **{f"opt.{k}": v for k, v in load_file(ckpt / "optimizer.safetensors").items()},
    }


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_crash_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    # 36 examples / batch 8 -> 4 micro-batches per epoch; 2 per update: resumes mid-epoch.
    config = tiny_config(max_steps=12, grad_accum_steps=2, checkpoint_every=5)
    straight = train(config, tiny_model(), _objective(), tiny_images(), tmp_path / "a")

    # Same run, killed during step 8 (after the checkpoint at step 5), then resumed.
    with pytest.raises(Crash):
        train(
            config,
            tiny_model(),
            _crashing(_objective(), after_calls=15),
            tiny_images(),
            tmp_path / "b",
        )
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000005"
    # A differently initialised model: everything must come from the checkpoint.
    resumed = train(
        config, tiny_model(seed=99), _objective(), tiny_images(), tmp_path / "b", resume=True
    )

    assert resumed.step == straight.step == 12
    assert resumed.losses == straight.losses  # the whole history, bit for bit
    assert len(resumed.losses) == 12
    _assert_bit_identical(_state(straight, tmp_path / "a"), _state(resumed, tmp_path / "b"))
    sa = json.loads((latest_checkpoint(tmp_path / "a" / "checkpoints") / "state.json").read_text())
    sb = json.loads((latest_checkpoint(tmp_path / "b" / "checkpoints") / "state.json").read_text())
    assert sa["data_position"] == sb["data_position"] == {"epoch": 5, "index": 32}
    assert sa["lr_scheduler"] == sb["lr_scheduler"]
    assert sa["ema"] == sb["ema"]
    # metrics.jsonl: the lines the killed run wrote after its checkpoint were dropped on resume
    steps_a = [r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    steps_b = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert steps_a == steps_b == [2, 4, 6, 8, 10, 12]
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert len(run["resumed"]) == 1


def test_extending_max_steps_on_resume_continues_exactly(tmp_path):
    """Train N steps, stop, resume to 2N (constant LR) == 2N straight."""
    config = tiny_config(max_steps=10, lr_schedule="constant", checkpoint_every=0)
    straight = train(config, tiny_model(), _objective(), tiny_images(), tmp_path / "a")
    first = tiny_config(max_steps=5, lr_schedule="constant", checkpoint_every=0)
    half = train(first, tiny_model(), _objective(), tiny_images(), tmp_path / "b")
    assert half.step == 5
    resumed = train(
        config, tiny_model(seed=1), _objective(), tiny_images(), tmp_path / "b", resume=True
    )
    assert resumed.losses == straight.losses
    _assert_bit_identical(_state(straight, tmp_path / "a"), _state(resumed, tmp_path / "b"))
    # the run's wall time carries across the resume: the first call's, up to its checkpoint,
    # plus the second's (a budget comparison between an interrupted and a straight run)
    saved = json.loads((tmp_path / "b/checkpoints/step_00000005/state.json").read_text())
    assert half.total_seconds == half.seconds and 0 < saved["train_seconds"] <= half.seconds
    assert resumed.total_seconds == pytest.approx(saved["train_seconds"] + resumed.seconds)
    seconds = [r["seconds"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert seconds == sorted(seconds) and seconds[-1] > saved["train_seconds"]


def test_a_checkpoint_holds_only_safetensors_and_json(tmp_path):
    result = train(tiny_config(max_steps=4), tiny_model(), _objective(), tiny_images(), tmp_path)
    files = sorted(p.name for p in result.checkpoint.iterdir())
    assert files == sorted(
        [
            "model.safetensors",
            "ema.safetensors",
            "optimizer.safetensors",
            "optimizer.json",
            "history.safetensors",
            "rng_rank0.safetensors",
            "rng_rank0.json",
            "state.json",
        ]
    )
    for p in result.checkpoint.iterdir():
        raw = p.read_bytes()
        assert not raw.startswith(b"\x80"), f"{p.name} looks like a pickle"
        assert b"PK\x03\x04" not in raw[:4], f"{p.name} looks like a torch.save zip"
        if p.suffix == ".json":
            json.loads(raw)
        else:
            load_file(p)  # parses as safetensors
    # the optimizer moments are there, by parameter
    opt = load_file(result.checkpoint / "optimizer.safetensors")
    assert {k.split(".", 2)[2] for k in opt} == {"step", "exp_avg", "exp_avg_sq"}
    assert torch.equal(
        load_file(result.checkpoint / "model.safetensors")["conv1.weight"],
        result.model.conv1.weight,
    )


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_latest(tmp_path, monkeypatch):
    config = tiny_config(max_steps=12, checkpoint_every=4)
    real_save = trainer_module.save_model
    calls = {"n": 0}

    def failing_save(model, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # checkpoint 1 writes model + ema; checkpoint 2 dies at its ema
            raise OSError("disk full (simulated)")
        return real_save(model, filename, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_model", failing_save)
    with pytest.raises(OSError, match="simulated"):
        train(config, tiny_model(), _objective(), tiny_images(), tmp_path)
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_00000004"]  # no .tmp-* left behind
    assert latest_checkpoint(root).name == "step_00000004"
    monkeypatch.setattr(trainer_module, "save_model", real_save)

    # the surviving checkpoint is complete: resuming from it reproduces a clean run
    resumed = train(config, tiny_model(), _objective(), tiny_images(), tmp_path, resume=True)
    clean = train(config, tiny_model(), _objective(), tiny_images(), tmp_path / "clean")
    assert resumed.losses == clean.losses


def test_write_checkpoint_failure_and_pruning(tmp_path):
    def write(folder):
        (folder / "state.json").write_text("{}")

    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, write, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]

    def broken(folder):
        (folder / "state.json").write_text("{")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_checkpoint(tmp_path, 4, broken, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002", "step_00000003"]
    # a stale temporary folder (a process killed mid-write) is ignored, then cleaned up
    (tmp_path / ".tmp-step_00000009").mkdir()
    (tmp_path / ".tmp-step_00000009" / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    write_checkpoint(tmp_path, 5, write, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000005"]


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change; reset it
    around a test that trains in bf16 (a real run sets it once per process)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_bf16_mixed_precision_trains_and_resumes_exactly(tmp_path, fresh_accelerate_state):
    config = tiny_config(max_steps=6, checkpoint_every=3, mixed_precision="bf16")
    straight = train(config, tiny_model(), _objective(), tiny_images(), tmp_path / "a")
    with pytest.raises(Crash):
        train(
            config,
            tiny_model(),
            _crashing(_objective(), after_calls=4),
            tiny_images(),
            tmp_path / "b",
        )
    resumed = train(config, tiny_model(5), _objective(), tiny_images(), tmp_path / "b", resume=True)
    assert resumed.losses == straight.losses
    _assert_bit_identical(_state(straight, tmp_path / "a"), _state(resumed, tmp_path / "b"))
    assert straight.model.conv1.weight.dtype == torch.float32  # master weights stay fp32
    # bf16 autocast really ran: the losses differ from a full-precision run
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    full = train(
        tiny_config(max_steps=6, checkpoint_every=3),
        tiny_model(),
        _objective(),
        tiny_images(),
        tmp_path / "c",
    )
    assert full.losses != straight.losses


def test_load_weights_for_export(tmp_path):
    from difflab.train import load_weights

    result = train(tiny_config(max_steps=2), tiny_model(), _objective(), tiny_images(), tmp_path)
    model = tiny_model(seed=7)
    assert load_weights(tmp_path, model).name == "ema.safetensors"
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.parameters(), result.ema_model.parameters(), strict=True)
    )
    assert load_weights(result.checkpoint, model, ema=False).name == "model.safetensors"
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.parameters(), result.model.parameters(), strict=True)
    )
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        load_weights(tmp_path / "nowhere", model)
