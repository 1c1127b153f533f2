"""The text-to-image pipeline: diffusers folder layout, interop with plain diffusers, save/load
bit-identity, and building from diffusers components. Tiny random-initialised networks: what is
tested is the plumbing and the math, not image quality."""

import json

import pytest
import torch

from difflab.pipelines.text_to_image import TextToImagePipeline, image_grid
from difflab.schedules import timesteps


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


def test_prompt_encoder_pads_like_stable_diffusion(prompt_encoder, caplog):
    ids = prompt_encoder.token_ids(["a red circle", "two blue squares"])
    assert ids.shape == (2, 32)
    embeddings = prompt_encoder(["a red circle"])
    assert embeddings.shape == (1, 32, 384)
    with pytest.warns(UserWarning, match="reads only the first 32"):
        prompt_encoder([" ".join(["red circle"] * 40)])
    # one warning that says what happens, not also the tokenizer's "indexing errors" log line
    assert not [r for r in caplog.records if "Token indices" in r.getMessage()]


def test_saved_folder_has_the_diffusers_layout(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder"):
        assert list((tmp_path / part).glob("*.safetensors")), part
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    assert (
        json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text())[
            "model_max_length"
        ]
        == 32
    )


def test_plain_diffusers_loads_our_folder_and_gives_the_same_latents(pipeline, tmp_path):
    from diffusers import DiffusionPipeline

    pipeline.save_pretrained(tmp_path)
    theirs = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "StableDiffusionPipeline"
    prompts = ["a red circle above a blue square", "two green triangles"]
    generators = [torch.Generator().manual_seed(s) for s in (11, 12, 13, 14)]
    reference = theirs(
        prompts,
        num_images_per_prompt=2,
        num_inference_steps=8,
        guidance_scale=4.0,
        generator=generators,
        output_type="latent",
    ).images
    # StableDiffusionPipeline imposes DDIM's steps_offset = 1: visit the same timesteps.
    assert theirs.scheduler.config.steps_offset == 1
    ours = pipeline.latents(
        prompts,
        num_images_per_prompt=2,
        steps=8,
        guidance=4.0,
        sampler="ddim",
        seed=[torch.Generator().manual_seed(s) for s in (11, 12, 13, 14)],
        spacing=timesteps(pipeline.schedule, 8, "leading", offset=1),
    )
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-4), (ours - reference).abs().max()


def test_pipeline_built_from_diffusers_components_matches(pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipeline.save_pretrained(tmp_path)
    rebuilt = TextToImagePipeline.from_diffusers(StableDiffusionPipeline.from_pretrained(tmp_path))
    a = pipeline.latents("a pink star", steps=4, guidance=3.0, sampler="dpmpp_2m", seed=3)
    b = rebuilt.latents("a pink star", steps=4, guidance=3.0, sampler="dpmpp_2m", seed=3)
    assert torch.equal(a, b)


def test_save_load_gives_bit_identical_images(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path)
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    for sampler in ("ddim", "ddpm"):
        a = pipeline.latents(["a yellow circle"], 2, steps=5, guidance=2.0, sampler=sampler, seed=7)
        b = loaded.latents(["a yellow circle"], 2, steps=5, guidance=2.0, sampler=sampler, seed=7)
        assert torch.equal(a, b), sampler
    images = loaded(["a yellow circle"], steps=3, seed=1)
    assert images[0].size == (32, 32) and images[0].mode == "RGB"
    assert image_grid(images * 4, columns=2).size == (64, 64)


def test_images_do_not_depend_on_batch_size(pipeline):
    alone = pipeline.latents(["a red circle"], steps=4, guidance=2.0, sampler="ddim", seed=5)
    batch = pipeline.latents(
        ["a blue square", "a red circle"], steps=4, guidance=2.0, sampler="ddim", seed=4
    )
    assert torch.allclose(alone[0], batch[1], atol=1e-5)


def test_loading_a_non_pipeline_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pipeline folder"):
        TextToImagePipeline.from_pretrained(tmp_path)


def test_folder_without_text_encoder_loads_from_the_package(pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipeline.save_pretrained(tmp_path, include_text_encoder=False)
    assert not (tmp_path / "text_encoder").exists()
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    a = pipeline.latents("a red circle", steps=3, guidance=2.0, sampler="ddim", seed=2)
    assert torch.equal(
        a, loaded.latents("a red circle", steps=3, guidance=2.0, sampler="ddim", seed=2)
    )
    plain = StableDiffusionPipeline.from_pretrained(
        tmp_path, text_encoder=pipeline.prompt_encoder.text_encoder
    )
    assert plain.unet.config.sample_size == pipeline.unet.config.sample_size


def test_pickled_weights_are_refused_not_unpickled(pipeline, tmp_path):
    import pickle
    import shutil

    pipeline.save_pretrained(tmp_path, include_text_encoder=False)
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle, never read")
    with pytest.raises(Exception, match="safetensors") as caught:
        TextToImagePipeline.from_pretrained(tmp_path)
    assert not isinstance(caught.value, pickle.UnpicklingError)
    shutil.rmtree(tmp_path)


def test_dit_denoiser_saves_loads_bit_identically_and_in_plain_diffusers(pipeline, tmp_path):
    from diffusers import DiffusionPipeline, PixArtTransformer2DModel

    from difflab.models.networks import text_conditional_dit

    torch.manual_seed(0)
    dit = text_conditional_dit(num_layers=2, num_attention_heads=2, attention_head_dim=16)
    ours = TextToImagePipeline(dit.eval(), pipeline.vae, pipeline.prompt_encoder, pipeline.schedule)
    ours.save_pretrained(tmp_path, include_text_encoder=False)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "PixArtTransformer2DModel"]
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.unet, PixArtTransformer2DModel)
    a = ours.latents(["a red ring"], 2, steps=4, guidance=3.0, sampler="dpmpp_2m", seed=1)
    b = loaded.latents(["a red ring"], 2, steps=4, guidance=3.0, sampler="dpmpp_2m", seed=1)
    assert a.shape == (2, 4, 8, 8) and torch.equal(a, b)
    plain = DiffusionPipeline.from_pretrained(
        tmp_path, text_encoder=pipeline.prompt_encoder.text_encoder
    )
    assert isinstance(plain.unet, PixArtTransformer2DModel)


def test_dit_patch_size_must_divide_the_latent():
    from difflab.models.networks import text_conditional_dit

    with pytest.raises(ValueError, match="not divisible by the DiT patch size 3"):
        text_conditional_dit(sample_size=8, patch_size=3)


def test_pixel_space_model_saves_and_loads_bit_identically(prompt_encoder, tmp_path):
    from difflab.models.networks import text_conditional_unet
    from difflab.schedules import make_schedule

    torch.manual_seed(0)
    unet = text_conditional_unet(
        sample_size=16, in_channels=3, block_out_channels=(16, 32), attention_head_dim=4,
        norm_num_groups=8,
    )  # fmt: skip
    schedule = make_schedule("linear", 1000)
    pixel = TextToImagePipeline(unet.eval(), None, prompt_encoder, schedule)
    pixel.save_pretrained(tmp_path, include_text_encoder=False)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["vae"] == [None, None] and not (tmp_path / "vae").exists()
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    a = pixel.decode(pixel.latents(["a red circle"], 2, steps=3, sampler="ddim", seed=3))
    b = loaded.decode(loaded.latents(["a red circle"], 2, steps=3, sampler="ddim", seed=3))
    assert loaded.vae is None and a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="needs one: sample it with difflab"):
        pixel.to_diffusers()


def test_cross_attention_levels_are_configurable():
    from difflab.models.networks import text_conditional_unet

    default = text_conditional_unet(block_out_channels=(16, 32), norm_num_groups=8)
    assert default.config.down_block_types == ("CrossAttnDownBlock2D", "DownBlock2D")
    pixel = text_conditional_unet(
        sample_size=16, in_channels=3, block_out_channels=(16, 32, 32), norm_num_groups=8,
        attention_levels=(False, True, False),
    )  # fmt: skip
    assert pixel.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert pixel.config.up_block_types == ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match="attention_levels has 1 entries for 2 levels"):
        text_conditional_unet(block_out_channels=(16, 32), attention_levels=(True,))


def test_sampled_latents_are_ordinary_tensors_usable_in_autograd(tiny_pipeline):
    # sampling runs in inference mode for speed; its result must still feed a graph
    latents = tiny_pipeline.latents(["a red circle"], steps=2, guidance=2.0, sampler="ddim")
    assert not latents.is_inference()
    weight = torch.ones((), requires_grad=True)
    (latents * weight).sum().backward()
    assert weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pipeline_runs_on_the_gpu_whole_or_split(tiny_pipeline):
    """``pipeline.to("cuda")`` moves every part; with only the denoiser on the GPU (as in the
    Trainer's sample grids) prompt states and latents follow the module that uses them. Both
    give the CPU's latents up to floating-point differences."""
    import copy

    cpu = tiny_pipeline.latents(["a red circle"], steps=4)
    split = copy.copy(tiny_pipeline)
    split.unet = copy.deepcopy(tiny_pipeline.unet).to("cuda")
    assert torch.allclose(split.latents(["a red circle"], steps=4).cpu(), cpu, atol=1e-3)
    assert len(split(["a red circle"], steps=4)) == 1
    whole = copy.deepcopy(tiny_pipeline).to("cuda")
    assert next(whole.vae.parameters()).is_cuda
    assert next(whole.prompt_encoder.text_encoder.parameters()).is_cuda
    assert torch.allclose(whole.latents(["a red circle"], steps=4).cpu(), cpu, atol=1e-3)


def test_a_shifted_schedule_round_trips_through_the_folder(pipeline, tmp_path):
    """A recipe's ``schedule_shift`` changes the betas; the folder stores them, so a loaded
    pipeline (and diffusers) samples with the schedule the model was trained on."""
    from difflab.schedules import make_schedule, shifted_schedule

    shifted = shifted_schedule(make_schedule("cosine", prediction_type="v_prediction"), 4.0)
    model = TextToImagePipeline(
        pipeline.unet, pipeline.vae, pipeline.prompt_encoder, shifted, name="shifted"
    )
    model.save_pretrained(tmp_path, include_text_encoder=False)
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    assert loaded.schedule.prediction_type == "v_prediction"
    assert torch.allclose(loaded.schedule.alphas_cumprod, shifted.alphas_cumprod, rtol=1e-5)
