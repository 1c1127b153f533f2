"""Shared fixtures: tiny random-initialised models (plumbing tests, not quality), and a loader
for the benchmark scripts."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from difflab.models.networks import small_vae, text_conditional_unet
from difflab.models.text_encoder import PromptEncoder
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.schedules import make_schedule


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep encoded-dataset caches out of the user's ~/.cache during tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFLAB_CACHE", str(tmp_path_factory.mktemp("difflab-cache")))
    yield
    mp.undo()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: benchmarks/NAME.py as a module (benchmarks/ is not a package).
    Its folder goes on sys.path first, as when the script runs, so its imports of sibling
    modules (report_text, ...) resolve whatever tests ran before."""

    def load(name: str):
        if str(BENCHMARKS) not in sys.path:
            sys.path.insert(0, str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def prompt_encoder():
    return PromptEncoder.from_pretrained()


@pytest.fixture(scope="session")
def tiny_pipeline(prompt_encoder):
    torch.manual_seed(0)
    unet = text_conditional_unet(
        block_out_channels=(32, 64), attention_head_dim=4, norm_num_groups=8
    )
    vae = small_vae(block_out_channels=(16, 32, 32), norm_num_groups=8, scaling_factor=0.7)
    schedule = make_schedule("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012)
    return TextToImagePipeline(unet.eval(), vae.eval(), prompt_encoder, schedule)


@pytest.fixture(scope="session")
def tiny_pipeline_folder(tiny_pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-t2i")
    tiny_pipeline.save_pretrained(folder, include_text_encoder=False)
    return folder
