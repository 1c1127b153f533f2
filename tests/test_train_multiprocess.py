"""Exact resume across 2 processes (DDP on CPU via gloo), launched with torchrun.

Slow (three launches, ~30 s on 2 cores), so it runs only with DIFFLAB_TEST_MULTIPROCESS=1:
    DIFFLAB_TEST_MULTIPROCESS=1 python -m pytest tests/test_train_multiprocess.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("DIFFLAB_TEST_MULTIPROCESS") != "1" or shutil.which("torchrun") is None,
    reason="set DIFFLAB_TEST_MULTIPROCESS=1 to run the 2-process resume test",
)

SCRIPT = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch
from train_tiny import tiny_config, tiny_images, tiny_model
from difflab.schedules import make_schedule
from difflab.train import diffusion_objective, train
out, max_steps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
config = tiny_config(max_steps=max_steps, lr_schedule="constant", checkpoint_every=0,
                     batch_size=4, grad_accum_steps=2)
r = train(config, tiny_model(7 if resume else 0),
          diffusion_objective(make_schedule(num_train_timesteps=100)), tiny_images(), out,
          resume=resume)
rank = torch.distributed.get_rank()
print(f"RESULT {{rank}} {{r.losses}} {{[float(p.sum()) for p in r.ema_model.parameters()]}}")
"""


def _launch(script: Path, *args: str) -> list[str]:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["torchrun", "--nproc_per_node", "2", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(line for line in done.stdout.splitlines() if line.startswith("RESULT"))


def test_two_process_resume_is_exact(tmp_path):
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(root), tests=str(root / "tests")))
    straight = _launch(script, str(tmp_path / "a"), "8", "0")
    _launch(script, str(tmp_path / "b"), "4", "0")
    resumed = _launch(script, str(tmp_path / "b"), "8", "1")
    assert len(straight) == 2 and straight == resumed
