"""Cascaded generation (difflab.pipelines.cascade): the noise-conditioning augmentation path in
training and sampling, save/load, the super_resolution recipe writing a cascade, and the
guidance-and-cascades benchmark's smoke run."""

import pytest
import torch

from difflab.diffusion import q_sample
from difflab.models.networks import text_conditional_unet
from difflab.pipelines.cascade import (
    CascadePipeline,
    SuperResolutionPipeline,
    augmented_condition,
    downsample,
    upsample,
)
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.recipes.super_resolution import super_resolution_objective
from difflab.schedules import make_schedule

SCHEDULE = make_schedule("linear", 1000)
UNET = dict(block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=4,
            attention_levels=(False, True))  # fmt: skip


class Recorder(torch.nn.Module):
    """A stand-in SR U-Net: records what it is called with, returns zeros of the image's shape."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        self.out_channels, self.calls = out_channels, []
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, class_labels=None, encoder_hidden_states=None):
        self.calls.append({"x": x.clone(), "t": t.clone(), "levels": class_labels.clone(),
                           "context": encoder_hidden_states})  # fmt: skip
        return x[:, : self.out_channels] * 0 + self.weight


def test_noise_augmentation_is_the_forward_process_at_low_resolution():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=g)
    levels = torch.tensor([0, 250, 999])
    condition = augmented_condition(low, 8, levels, SCHEDULE, noise)
    abar = SCHEDULE.alpha_bar(levels, like=low)
    expected = torch.nn.functional.interpolate(
        abar.sqrt() * low + (1 - abar).sqrt() * noise, size=(8, 8), mode="bilinear"
    )  # z_s = sqrt(abar_s) z + sqrt(1 - abar_s) eps, then upsampled
    assert torch.allclose(condition, expected, atol=1e-6)
    s_0 = (1 - SCHEDULE.alpha_bar(torch.tensor(0))).sqrt()  # level 0: nearly clean
    assert (condition[0] - upsample(low, 8)[0]).abs().max() <= 1.01 * s_0 * noise[0].abs().max()
    assert downsample(torch.ones(1, 1, 8, 8), 4).shape == (1, 1, 4, 4)


def test_training_feeds_the_augmented_low_resolution_image_and_its_level():
    model = Recorder()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    context = torch.randn(4, 5, 16)
    objective = super_resolution_objective(SCHEDULE, 4, 300)
    objective(model, {"image": images, "encoder_hidden_states": context},
              torch.Generator().manual_seed(7))  # fmt: skip
    (call,) = model.calls
    # redraw what the objective drew, in its order: levels, augmentation noise, then the loss
    g = torch.Generator().manual_seed(7)
    levels = torch.randint(0, 301, (4,), generator=g)
    noise = torch.randn(4, 3, 4, 4, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    eps = torch.randn(images.shape, generator=g)
    assert torch.equal(call["levels"], levels) and torch.equal(call["t"], t)
    assert call["x"].shape == (4, 6, 8, 8) and call["context"] is context
    assert torch.allclose(call["x"][:, :3], q_sample(images, t, SCHEDULE, eps), atol=1e-6)
    condition = augmented_condition(downsample(images, 4), 8, levels, SCHEDULE, noise)
    assert torch.allclose(call["x"][:, 3:], condition, atol=1e-6)


def sr_pipeline(prompt_encoder, unet=None, aug_timestep=100):
    unet = unet or text_conditional_unet(16, 6, out_channels=3, class_embed_type="timestep", **UNET)
    return SuperResolutionPipeline(unet.eval(), prompt_encoder, SCHEDULE, 8, aug_timestep)


def test_sampling_uses_the_fixed_level_in_both_guidance_branches(prompt_encoder):
    torch.manual_seed(0)
    pipe = sr_pipeline(prompt_encoder, aug_timestep=150)
    recorder = Recorder()
    recorder.config = pipe.unet.config
    pipe.unet = recorder
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    pipe.upsample(["a red circle", "a blue square"], low, steps=2, guidance=3.0, sampler="ddim")
    for call in recorder.calls:
        assert call["x"].shape == (4, 6, 16, 16)  # [uncond; cond] in one batch
        assert torch.equal(call["levels"], torch.full((4,), 150))
        condition = call["x"][:, 3:]
        assert torch.equal(condition[:2], condition[2:])  # the same image in both branches
    from difflab.pipelines.cascade import AUGMENTATION_SEED_OFFSET
    from difflab.pipelines.text_to_image import noise_per_image

    noise = noise_per_image((3, 8, 8), 2, AUGMENTATION_SEED_OFFSET)
    expected = augmented_condition(low, 16, torch.full((2,), 150), SCHEDULE, noise)
    assert torch.allclose(recorder.calls[0]["x"][2:, 3:], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"in \[0, 999\]"):
        pipe.upsample("x", low, steps=1, aug_timestep=1000)
    with pytest.raises(ValueError, match="takes 3x8x8 images"):
        pipe.upsample("x", torch.zeros(1, 3, 4, 4), steps=1)


def test_cascade_chains_sizes_saves_and_loads_bit_identically(prompt_encoder, tmp_path):
    from difflab.zoo import load_pipeline

    torch.manual_seed(0)
    base = TextToImagePipeline(text_conditional_unet(8, 3, **UNET).eval(), None, prompt_encoder,
                               SCHEDULE)  # fmt: skip
    cascade = CascadePipeline(base, [sr_pipeline(prompt_encoder)])
    images = cascade.latents(["a red circle"], 2, steps=2, guidance=2.0, sampler="ddim", seed=3)
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    cascade.save_pretrained(tmp_path / "cascade")
    loaded = load_pipeline(tmp_path / "cascade")
    again = loaded.latents(["a red circle"], 2, steps=2, guidance=2.0, sampler="ddim", seed=3)
    assert torch.equal(images, again)
    other = loaded.latents(["a red circle"], 2, steps=2, guidance=2.0, sampler="ddim", seed=3,
                           aug_timesteps=[0])  # fmt: skip
    assert not torch.equal(images, other)
    with pytest.raises(ValueError, match="takes 8-px images but the stage before it makes 16"):
        CascadePipeline(base, [sr_pipeline(prompt_encoder), sr_pipeline(prompt_encoder)])
    with pytest.raises(ValueError, match="in_channels = 2 x out_channels"):
        sr_pipeline(prompt_encoder, text_conditional_unet(16, 3, **UNET))


def test_super_resolution_recipe_writes_the_stage_and_the_cascade(prompt_encoder, tmp_path):
    from difflab.recipes import run_recipe
    from difflab.zoo import load_pipeline

    torch.manual_seed(0)
    base = TextToImagePipeline(text_conditional_unet(8, 3, **UNET).eval(), None, prompt_encoder,
                               SCHEDULE)  # fmt: skip
    base.save_pretrained(tmp_path / "base", include_text_encoder=False)
    recipe = tmp_path / "sr.toml"
    recipe.write_text(f"""
kind = "super_resolution"
[recipe]
image_size = 16
low_res_size = 8
dataset_length = 8
block_out_channels = [8, 16]
attention_head_dim = 4
norm_num_groups = 8
attention_levels = [false, true]
sample_steps = 2
validation_images = 2
max_aug_timestep = 300
aug_timestep = 50
base = "{tmp_path / "base"}"
[train]
max_steps = 2
batch_size = 4
checkpoint_every = 2
sample_every = 2
log_every = 1
""")
    figures = run_recipe(recipe, tmp_path / "run")
    assert figures["steps"] == 2 and figures["bilinear_psnr_db"] > 10
    stage = load_pipeline(tmp_path / "run" / "pipeline")
    assert isinstance(stage, SuperResolutionPipeline) and stage.aug_timestep == 50
    assert stage.clip_sample  # the recipe's default: clip x0 while sampling
    cascade = load_pipeline(tmp_path / "run" / "cascade")
    assert isinstance(cascade, CascadePipeline) and cascade.size == 16
    assert list((tmp_path / "run" / "samples").glob("*.png"))
    recipe.write_text(recipe.read_text().replace("low_res_size = 8", "low_res_size = 4"))
    with pytest.raises(ValueError, match="making 4-px images"):
        run_recipe(recipe, tmp_path / "run2")


def test_guidance_cascades_benchmark_smoke(load_benchmark, tmp_path):
    module = load_benchmark("guidance_cascades")
    report = module.main(["smoke", "--report-dir", str(tmp_path)]).read_text()
    for section in ("## Classifier guidance against", "### digits", "## Cascade against",
                    "## Dynamic thresholding", "## unCLIP", "Variations (2 validation"):  # fmt: skip
        assert section in report
    assert "Not yet measured" not in report
    assert "| cascade base 8 px, bilinear to 16 |" in report  # the base alone, beside the cascade
    assert "(another source: " in report  # variations' similarity beside unrelated pairs
    assert (tmp_path / "guidance_threshold.png").is_file()
    # pixel-space sampling in the classifier and cascade parts clips x0 unless told not to
    assert report.count("the implied x0 clipped to [-1, 1]") == 2
    assert module.pixel_threshold(module.parse_args(["cascade"])) == {"threshold": "static"}
    none = module.pixel_threshold(module.parse_args(["cascade", "--x0-clip", "none"]))
    assert none == {"threshold": "none"}  # named, so a folder's clip_sample cannot turn it on


def test_cascade_benchmark_adds_rows_measured_in_a_later_call(load_benchmark, tmp_path):
    import json

    module = load_benchmark("guidance_cascades")

    def row(model, folder, level, score):
        return {"model": model, "folder": folder, "aug_timestep": level, "score": score}

    stored = {"command": "first", "minutes": 2.0, "settings": {"steps": 20},
              "rows": [row("single", "a", None, 0.1), row("cascade", "b", 0, 0.2)]}  # fmt: skip
    later = {"command": "second", "minutes": 1.0, "settings": {"steps": 20},
             "rows": [row("single", "c", None, 0.3), row("cascade", "b", 0, 0.25)]}  # fmt: skip
    merged = module.with_stored_rows(later, stored)
    assert [(r["folder"], r["score"]) for r in merged["rows"]] == [("a", 0.1), ("c", 0.3),
                                                                     ("b", 0.25)]  # fmt: skip
    assert merged["commands"] == ["first", "second"] and merged["minutes"] == 3.0
    file = tmp_path / "cascade.json"
    file.write_text(json.dumps(stored))
    module._check_settings_match(file, {"steps": 20})
    with pytest.raises(SystemExit, match="measured with other settings"):
        module._check_settings_match(file, {"steps": 50})
