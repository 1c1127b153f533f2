"""unCLIP (difflab.pipelines.unclip): slerp, the prior's de-standardisation, variations and
interpolations, save/load, the decoder and prior recipes and the `variations` / `interpolate`
commands."""

import math

import pytest
import torch
from typer.testing import CliRunner

from difflab.cli import app
from difflab.models.clip import CLIPConfig, ShapesCLIP, save_clip_model
from difflab.models.networks import embedding_prior, text_conditional_unet
from difflab.pipelines.unclip import UnCLIPPipeline, slerp
from difflab.schedules import make_schedule

SCHEDULE = make_schedule("linear", 1000)
PRIOR_SCHEDULE = make_schedule("cosine", 1000, prediction_type="sample")
TRAIN = """
[train]
max_steps = 2
batch_size = 4
checkpoint_every = 2
sample_every = 2
log_every = 1
"""


def tiny_clip(prompt_encoder) -> ShapesCLIP:
    torch.manual_seed(0)
    config = CLIPConfig(image_size=8, channels=(8, 8), layers_per_block=1, norm_groups=4, grid=2,
                        embed_dim=16, text_hidden=32, noise_aware=True, name="tiny")  # fmt: skip
    return ShapesCLIP(config, prompt_encoder).eval()


@pytest.fixture(scope="module")
def unclip(prompt_encoder) -> UnCLIPPipeline:
    torch.manual_seed(1)
    decoder = text_conditional_unet(8, 3, (8, 16), attention_head_dim=4, norm_num_groups=8,
                                    attention_levels=(False, True), cross_attention_dim=16,
                                    image_embedding_dim=16)  # fmt: skip
    prior = embedding_prior(16, 1, 2, 8).eval()
    with torch.no_grad():
        prior.clip_mean.fill_(0.3)
        prior.clip_std.fill_(2.0)
    return UnCLIPPipeline(decoder.eval(), None, SCHEDULE, tiny_clip(prompt_encoder), prior,
                          PRIOR_SCHEDULE, name="tiny")  # fmt: skip


def test_slerp_follows_the_great_circle():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-7)
    assert torch.allclose(path.norm(dim=1), torch.ones(5))
    angles = torch.arccos(path @ a)  # equal angular steps: pi/8 each
    assert torch.allclose(angles, torch.linspace(0, math.pi / 2, 5), atol=1e-6)
    assert torch.allclose(slerp(a, a, torch.tensor([0.5]))[0], a)


def test_prior_samples_are_destandardised_unit_embeddings(unclip):
    text = unclip.text_embeddings(["a red circle", "two blue squares"])
    a = unclip.prior_embeddings(text, steps=3, guidance=2.0, seed=0)
    b = unclip.prior_embeddings(text, steps=3, guidance=2.0, seed=0)
    assert a.shape == (2, 16) and torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.equal(a, b)
    # the sample is normalize(clip_std * x0 + clip_mean) of the sampler's x0
    from difflab import samplers
    from difflab.models.networks import call_denoiser
    from difflab.pipelines.text_to_image import noise_per_image
    from difflab.pipelines.unclip import PRIOR_SEED_OFFSET

    def model(x, t):
        return call_denoiser(unclip.prior, x, t, proj_embedding=text)

    x0 = samplers.sample("dpmpp_2m", model, PRIOR_SCHEDULE,
                         noise_per_image((16,), 2, PRIOR_SEED_OFFSET), 3)  # fmt: skip
    c = unclip.prior_embeddings(text, steps=3, guidance=1.0, seed=0)
    assert torch.allclose(c, torch.nn.functional.normalize(2.0 * x0 + 0.3, dim=-1), atol=1e-6)
    with pytest.raises(ValueError, match="steps must be a whole number of at least 1"):
        unclip.prior_embeddings(text, steps=0)  # not "the default 25"


def test_variations_interpolations_and_storage(unclip, tmp_path):
    from difflab.zoo import load_pipeline

    images = unclip.decode(unclip.latents(["a red circle", "a star"], steps=2, sampler="ddim"))
    variations = unclip.variations(images, 3, steps=2, sampler="ddim", seed=5)
    assert variations.shape == (6, 3, 8, 8)
    assert not torch.allclose(variations[0], variations[1])  # other seeds
    path = unclip.interpolate(images[0], images[1], 4, steps=2, sampler="ddim", seed=5)
    assert path.shape == (4, 3, 8, 8)
    # the first point decodes image 0's own embedding from seed 5, as its first variation does
    assert torch.allclose(path[0], variations[0], atol=1e-5)
    text_only = unclip.latents(["a red circle"], steps=2, sampler="ddim", use_prior=False)
    assert text_only.shape == (1, 3, 8, 8)
    unclip.save_pretrained(tmp_path / "unclip")
    loaded = load_pipeline(tmp_path / "unclip")
    assert isinstance(loaded, UnCLIPPipeline) and loaded.prior is not None
    again = loaded.variations(images, 3, steps=2, sampler="ddim", seed=5)
    assert torch.equal(again, variations)
    with pytest.raises(ValueError, match="has no prior yet"):
        UnCLIPPipeline(unclip.unet, None, SCHEDULE, unclip.clip).prior_embeddings(
            torch.zeros(1, 16)
        )


def test_decoder_and_prior_recipes_then_the_commands(prompt_encoder, tmp_path):
    from PIL import Image

    from difflab.generate import settings_from_png
    from difflab.recipes import run_recipe

    save_clip_model(tiny_clip(prompt_encoder), tmp_path / "clip")
    decoder = tmp_path / "decoder.toml"
    decoder.write_text(f"""
kind = "unclip_decoder"
[recipe]
clip = "{tmp_path / "clip"}"
vae = ""
image_size = 8
dataset_length = 8
block_out_channels = [8, 16]
attention_head_dim = 4
norm_num_groups = 8
attention_levels = [false, true]
cross_attention_dim = 16
sample_steps = 2
validation_images = 2
""" + TRAIN)  # fmt: skip
    figures = run_recipe(decoder, tmp_path / "decoder")
    assert -1 <= figures["reconstruction_clip_i"] <= 1
    prior = tmp_path / "prior.toml"
    prior.write_text(f"""
kind = "unclip_prior"
[recipe]
decoder = "{tmp_path / "decoder" / "pipeline"}"
dataset_length = 8
num_layers = 1
num_attention_heads = 2
attention_head_dim = 8
sample_steps = 2
validation_captions = 2
""" + TRAIN)  # fmt: skip
    figures = run_recipe(prior, tmp_path / "prior")
    assert -1 <= figures["validation_prior_cosine"] <= 1
    folder = str(tmp_path / "prior" / "pipeline")
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "a red circle", "--model", folder, "--steps", "2",
                                 "--out", str(tmp_path / "gen")])  # fmt: skip
    assert result.exit_code == 0, result.output
    png = next((tmp_path / "gen").glob("*.png"))
    assert settings_from_png(png).prompt == "a red circle"
    result = runner.invoke(app, ["variations", str(png), "--model", folder, "-n", "2",
                                 "--steps", "2", "--out", str(tmp_path / "var")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "var").glob("*-var*.png"))) == 2
    assert Image.open(tmp_path / "var" / "grid.png").size == (24, 8)
    result = runner.invoke(app, ["interpolate", str(png), str(png), "--model", folder,
                                 "--points", "3", "--steps", "2", "--out",
                                 str(tmp_path / "interp")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "interp" / "grid.png").size == (40, 8)
    source = png.read_bytes()  # variations written beside their source keep it and each other
    for _ in range(2):
        result = runner.invoke(app, ["variations", str(png), "--model", folder, "-n", "1",
                                     "--steps", "2", "--out", str(png.parent)])  # fmt: skip
        assert result.exit_code == 0, result.output
    assert png.read_bytes() == source
    assert {p.name for p in png.parent.iterdir()} == {
        png.name, f"{png.stem}-var0.png", f"{png.stem}-var0-1.png", "grid.png", "grid-1.png"
    }  # fmt: skip
    result = runner.invoke(app, ["variations", str(png), "--model", str(tmp_path / "nope")])
    assert result.exit_code != 0
