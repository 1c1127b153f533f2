"""Pixel folders' x0 clipping default (diffusers' ``clip_sample`` scheduler flag): each pixel-space
pipeline clips the implied x0 to [-1, 1] at every step when its folder says so, exactly as the
static threshold guide does; a call's ``threshold`` overrides it; the flag round-trips through
the folder where plain diffusers reads it; latent models refuse it; `difflab generate` records
the thresholding that ran, so a PNG replays bit for bit."""

import dataclasses

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from difflab.cli import app
from difflab.guidance import resolved_threshold, sampling_threshold, threshold_guide
from difflab.models.networks import pixel_unet, text_conditional_unet
from difflab.pipelines.cascade import CascadePipeline, SuperResolutionPipeline
from difflab.pipelines.pixel import PixelPipeline
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.schedules import make_schedule
from difflab.zoo import load_pipeline

SCHEDULE = make_schedule("linear", 1000)
UNET = dict(block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=4,
            attention_levels=(False, True))  # fmt: skip
runner = CliRunner()


def wild_pixel_pipeline(clip_sample: bool) -> PixelPipeline:
    """A random tiny unconditional U-Net whose outputs are scaled up, so its implied x0 leaves
    [-1, 1] (as a briefly trained pixel model's does) and clipping changes the samples."""
    torch.manual_seed(0)
    unet = pixel_unet(8, 3, block_out_channels=(8, 16), norm_num_groups=8).eval()
    with torch.no_grad():
        unet.conv_out.weight.mul_(20.0)
        unet.conv_out.bias.add_(0.5)
    return PixelPipeline(unet, SCHEDULE, clip_sample=clip_sample)


def test_resolved_threshold_reads_the_call_then_the_folder():
    assert resolved_threshold(None, True) == "static" and resolved_threshold(None, False) == ""
    assert resolved_threshold("none", True) == "" and resolved_threshold("", True) == ""
    assert resolved_threshold("dynamic", False) == "dynamic"
    assert sampling_threshold(None, False) is None
    with pytest.raises(ValueError, match="unknown thresholding 'soft'.*static, dynamic or none"):
        resolved_threshold("soft", True)


def test_a_clip_sample_folder_samples_as_the_static_threshold_guide(tmp_path):
    clipping, plain = wild_pixel_pipeline(True), wild_pixel_pipeline(False)
    run = dict(steps=4, sampler="ddim", seed=1)
    by_default = clipping.sample(2, **run)
    assert torch.equal(by_default, plain.sample(2, guide=threshold_guide("static"), **run))
    assert torch.equal(by_default, plain.sample(2, threshold="static", **run))
    unclipped = clipping.sample(2, threshold="none", **run)
    assert torch.equal(unclipped, plain.sample(2, **run))
    assert not torch.allclose(by_default, unclipped, atol=1e-2)
    assert not torch.equal(clipping.sample(2, threshold="dynamic", **run), by_default)
    # the flag lives in the folder, as diffusers' own scheduler setting
    from diffusers import DDIMScheduler

    clipping.save_pretrained(tmp_path / "clip")
    assert DDIMScheduler.from_pretrained(tmp_path / "clip" / "scheduler").config.clip_sample
    loaded = load_pipeline(tmp_path / "clip")
    assert loaded.clip_sample and torch.equal(loaded.sample(2, **run), by_default)
    plain.save_pretrained(tmp_path / "plain")
    assert not load_pipeline(tmp_path / "plain").clip_sample


def test_text_to_image_and_cascade_folders_keep_their_clip_sample(prompt_encoder, tmp_path):
    torch.manual_seed(0)
    base = TextToImagePipeline(text_conditional_unet(8, 3, **UNET).eval(), None, prompt_encoder,
                               SCHEDULE, clip_sample=True)  # fmt: skip
    sr_unet = text_conditional_unet(16, 6, out_channels=3, class_embed_type="timestep", **UNET)
    stage = SuperResolutionPipeline(sr_unet.eval(), prompt_encoder, SCHEDULE, 8, 100,
                                    clip_sample=True)  # fmt: skip
    cascade = CascadePipeline(base, [stage])
    assert cascade.clip_sample
    run = dict(steps=2, guidance=2.0, sampler="ddim", seed=3)
    images = cascade.latents(["a red circle"], 2, **run)
    cascade.save_pretrained(tmp_path / "cascade")
    loaded = load_pipeline(tmp_path / "cascade")
    assert loaded.base.clip_sample and loaded.stages[0].clip_sample
    assert torch.equal(loaded.latents(["a red circle"], 2, **run), images)
    unclipped = cascade.latents(["a red circle"], 2, threshold="none", **run)
    assert not torch.equal(unclipped, images)
    off = CascadePipeline(dataclasses.replace(base, clip_sample=False),
                          [dataclasses.replace(stage, clip_sample=False)])  # fmt: skip
    assert not off.clip_sample and torch.equal(off.latents(["a red circle"], 2, **run), unclipped)
    assert torch.equal(off.latents(["a red circle"], 2, threshold="static", **run), images)


def test_latent_models_refuse_x0_clipping(tiny_pipeline):
    with pytest.raises(ValueError, match="leave clip_sample False when there is a VAE"):
        dataclasses.replace(tiny_pipeline, clip_sample=True)
    with pytest.raises(ValueError, match="thresholding acts on pixels"):
        tiny_pipeline.latents("a red circle", steps=1, threshold="static")
    assert tiny_pipeline.latents("a red circle", steps=1, threshold="none").shape[0] == 1


def test_generate_records_the_folder_default_and_replays_it(tmp_path):
    from difflab.generate import settings_from_png

    wild_pixel_pipeline(True).save_pretrained(tmp_path / "model")
    common = ["generate", "--model", str(tmp_path / "model"), "--steps", "3"]
    for name, extra, recorded in [("default", [], "static"),
                                  ("off", ["--threshold", "none"], "")]:  # fmt: skip
        result = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert settings_from_png(next((tmp_path / name).glob("*.png"))).threshold == recorded
    default, off = (next((tmp_path / n).glob("*.png")) for n in ("default", "off"))
    assert Image.open(default).tobytes() != Image.open(off).tobytes()
    for png in (default, off):
        again = tmp_path / f"again-{png.parent.name}"
        result = runner.invoke(app, ["generate", "--from-png", str(png), "--out", str(again)])
        assert result.exit_code == 0, result.output
        assert Image.open(next(again.glob("*.png"))).tobytes() == Image.open(png).tobytes()
