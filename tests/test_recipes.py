"""Every training recipe runs a few steps end to end (tiny sizes), and recipe files are checked."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from difflab.cli import app
from difflab.recipes import list_recipes, load_recipe, run_recipe
from difflab.recipes.config import read_recipe_file, recipe_as_toml

TINY_TRAIN = """
[train]
max_steps = 2
batch_size = 4
checkpoint_every = 2
sample_every = 2
log_every = 1
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_recipes_parse():
    names = set(list_recipes())
    assert {"shapes-vae", "shapes-t2i"} <= names
    for name in names:
        kind, options, config, run = load_recipe(name)
        assert callable(run) and config.max_steps > 0


@pytest.fixture(scope="module")
def tiny_vae_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    recipe = write(
        tmp,
        "vae.toml",
        """
kind = "vae"
[recipe]
image_size = 16
dataset_length = 16
block_out_channels = [8, 16, 16]
norm_num_groups = 8
scaling_images = 16
eval_images = 8
detector_scenes = 4
"""
        + TINY_TRAIN,
    )
    figures = run_recipe(recipe, tmp / "run")
    return tmp / "run", figures


def test_vae_recipe_smoke(tiny_vae_run):
    out, figures = tiny_vae_run
    assert figures["steps"] == 2 and figures["psnr_db"] > 0
    config = json.loads((out / "vae" / "config.json").read_text())
    assert config["scaling_factor"] == pytest.approx(figures["scaling_factor"])
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "loss.png").is_file() and list((out / "samples").glob("*.png"))
    assert json.loads((out / "results.json").read_text())["kind"] == "vae"


def test_vae_decoder_fine_tune_keeps_the_latent_space(tiny_vae_run, tmp_path):
    """train_encoder = false: the decoder changes; the encoder, and so every latent a diffusion
    model was trained on, and the scaling factor stay bit for bit as they were."""
    first, _ = tiny_vae_run
    recipe = write(
        tmp_path,
        "decoder.toml",
        f"""
kind = "vae"
[recipe]
init_from = "{first}"
train_encoder = false
image_size = 16
dataset_length = 16
scaling_images = 16
eval_images = 8
detector_scenes = 4
"""
        + TINY_TRAIN.replace("batch_size = 4", "batch_size = 4\nlearning_rate = 1e-2"),
    )
    figures = run_recipe(recipe, tmp_path / "run")
    weights = "vae/diffusion_pytorch_model.safetensors"
    before, after = load_file(first / weights), load_file(tmp_path / "run" / weights)
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and len(frozen) + len(trained) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    config = lambda run: json.loads((run / "vae" / "config.json").read_text())  # noqa: E731
    assert config(tmp_path / "run")["scaling_factor"] == config(first)["scaling_factor"]
    assert figures["trained_parameters"] == sum(after[k].numel() for k in trained)
    assert set(figures["round_trip_detector_accuracy"]) == {"shape", "colour", "size", "count"}


def test_vae_decoder_fine_tune_refuses_bad_starts(tmp_path):
    no_start = write(tmp_path, "a.toml", 'kind = "vae"\n[recipe]\ntrain_encoder = false\n')
    with pytest.raises(ValueError, match="trains only the decoder.*set init_from"):
        run_recipe(no_start, tmp_path / "a")
    missing = write(tmp_path, "b.toml", f'kind = "vae"\n[recipe]\ninit_from = "{tmp_path}/none"\n')
    with pytest.raises(FileNotFoundError, match=r"no trained VAE at .*\(`init_from = "):
        run_recipe(missing, tmp_path / "b")
    from difflab.recipes.vae import load_frozen_vae

    with pytest.raises(FileNotFoundError, match=r"name a shipped .*\(`--vae shapes-t2i`\)\.$"):
        load_frozen_vae(str(tmp_path / "none"), option="--vae")


def test_a_recipe_run_is_reproduced_by_its_seed(tiny_vae_run, tmp_path):
    """Initial weights come from the run's seed, not from torch's per-process random seed."""
    first, _ = tiny_vae_run
    recipe = first.parent / "vae.toml"
    weights = "vae/diffusion_pytorch_model.safetensors"
    run_recipe(recipe, tmp_path / "again")
    assert (tmp_path / "again" / weights).read_bytes() == (first / weights).read_bytes()
    run_recipe(recipe, tmp_path / "other", seed=1)
    assert (tmp_path / "other" / weights).read_bytes() != (first / weights).read_bytes()


DENOISER_OPTIONS = {
    "unet": "block_out_channels = [16, 32]\nattention_head_dim = 4\nnorm_num_groups = 8",
    "dit": 'denoiser = "dit"\ndit_layers = 1\ndit_heads = 2\ndit_head_dim = 8',
}


@pytest.mark.parametrize("denoiser", ["unet", "dit", "pixel-unet"])
def test_text_to_image_recipe_smoke(denoiser, tiny_vae_run, tmp_path, monkeypatch):
    from difflab.pipelines.text_to_image import TextToImagePipeline

    vae_dir, _ = tiny_vae_run
    pixel = denoiser.startswith("pixel-")
    recipe = write(
        tmp_path,
        "t2i.toml",
        f"""
kind = "text_to_image"
[recipe]
vae = "{"" if pixel else vae_dir / "vae"}"
image_size = 16
dataset_length = 16
{DENOISER_OPTIONS[denoiser.removeprefix("pixel-")]}
sample_steps = 2
"""
        + TINY_TRAIN,
    )
    figures = run_recipe(recipe, tmp_path / "run")
    assert figures["steps"] == 2
    pipeline = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert (pipeline.vae is None) == pixel
    assert pipeline.clip_sample == pixel  # pixel folders clip x0 by default, latent ones never
    assert pipeline.latent_shape == ((3, 16, 16) if pixel else (4, 4, 4))
    (image,) = pipeline("a red circle", steps=2, seed=0)
    assert image.size == (16, 16)
    # resuming a finished run continues from its checkpoint rather than starting over, and
    # takes the encoded training set from the cache instead of encoding it again
    from difflab.recipes import text_to_image

    assert list(text_to_image.encoding_cache_dir().glob("*.safetensors"))

    def must_not_encode(*args, **kwargs):
        raise AssertionError("the cached encoding was not used")

    monkeypatch.setattr(text_to_image, "encode_images", must_not_encode)
    again = run_recipe(recipe, tmp_path / "run", resume=True, max_steps=3)
    assert again["steps"] == 3
    # this call made 1 update of the tiny batch: its rate is that of the resumed part only
    assert 0 < again["train_images_per_second"] and again["train_seconds"] > 0


def test_recipe_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped recipes: .*shapes-vae"):
        load_recipe("no-such-recipe")
    bad_key = write(tmp_path, "a.toml", 'kind = "vae"\n[recipe]\nkl_wieght = 1.0\n')
    with pytest.raises(ValueError, match="unknown key.*'kl_wieght'.*Valid keys are: image_size"):
        load_recipe(bad_key)
    bad_train = write(tmp_path, "b.toml", 'kind = "vae"\n[train]\nmax_stepz = 1\n')
    with pytest.raises(ValueError, match="max_stepz"):
        load_recipe(bad_train)
    bad_type = write(tmp_path, "c.toml", 'kind = "vae"\n[recipe]\nimage_size = "big"\n')
    with pytest.raises(TypeError, match="image_size must be of type int, got .big."):
        load_recipe(bad_type)
    bad_kind = write(tmp_path, "d.toml", 'kind = "gan9000"\n')
    with pytest.raises(ValueError, match="unknown recipe kind 'gan9000'; kinds are: vae"):
        load_recipe(bad_kind)
    top = write(tmp_path, "e.toml", 'kind = "vae"\n[optimizer]\nlr = 1\n')
    with pytest.raises(ValueError, match="unknown top-level key.*'optimizer'"):
        load_recipe(top)
    no_vae = write(
        tmp_path, "f.toml", f'kind = "text_to_image"\n[recipe]\nvae = "{tmp_path}/none"\n'
    )
    with pytest.raises(FileNotFoundError, match="no trained VAE at .*difflab train shapes-vae"):
        run_recipe(no_vae, tmp_path / "run")


def test_a_recipe_extends_another_table_by_table(tmp_path):
    parent = 'kind = "vae"\n[recipe]\nimage_size = 16\nkl_weight = 0.5\n'
    write(tmp_path, "parent.toml", parent + "[train]\nmax_steps = 7\nbatch_size = 3\n")
    child = 'extends = "parent.toml"\n[recipe]\nkl_weight = 0.25\n[train]\nmax_steps = 9\n'
    write(tmp_path, "child.toml", child)
    grandchild = 'extends = "child.toml"\n[train]\nbatch_size = 5\n'
    _, options, config, _ = load_recipe(tmp_path / "child.toml")
    assert (options.image_size, options.kl_weight) == (16, 0.25)
    assert (config.max_steps, config.batch_size) == (9, 3)
    kind, options, config, _ = load_recipe(write(tmp_path, "grandchild.toml", grandchild))
    assert kind == "vae" and options.kl_weight == 0.25
    assert (config.max_steps, config.batch_size) == (9, 5)
    # a shipped recipe by name; the variant's typo is still refused after the merge
    variant = write(tmp_path, "v.toml", 'extends = "distill-lcm"\n[recipe]\nloss = "huber"\n')
    assert load_recipe(variant)[1] == dataclasses.replace(
        load_recipe("distill-lcm")[1], loss="huber"
    )
    typo = write(tmp_path, "typo.toml", 'extends = "distill-lcm"\n[recipe]\nteacherr = "x"\n')
    with pytest.raises(ValueError, match="unknown key.*'teacherr'"):
        load_recipe(typo)


def test_extends_errors_name_the_problem(tmp_path):
    write(tmp_path, "vae.toml", 'kind = "vae"\n')
    other_kind = write(tmp_path, "a.toml", 'extends = "vae.toml"\nkind = "pixel"\n')
    with pytest.raises(
        ValueError, match="kind 'pixel' differs from the kind 'vae' of the recipe it extends"
    ):
        load_recipe(other_kind)
    missing = write(tmp_path, "b.toml", 'extends = "nothere.toml"\n')
    with pytest.raises(
        FileNotFoundError, match="extends 'nothere.toml', but .*nothere.toml does not exist"
    ):
        load_recipe(missing)
    unknown = write(tmp_path, "c.toml", 'extends = "no-such-recipe"\n')
    with pytest.raises(FileNotFoundError, match="which is no shipped recipe .*distill-lcm"):
        load_recipe(unknown)
    write(tmp_path, "loop1.toml", 'extends = "loop2.toml"\n')
    loop = write(tmp_path, "loop2.toml", 'extends = "loop1.toml"\n')
    with pytest.raises(ValueError, match="in a loop: loop2.toml -> loop1.toml -> loop2.toml"):
        load_recipe(loop)


def test_recipes_show_prints_the_resolved_recipe_that_parses_to_the_same(tmp_path):
    result = CliRunner().invoke(app, ["recipes", "--show", "distill-lcm-shapes-t2i"])
    assert result.exit_code == 0, result.output
    assert "extends" not in result.output and 'teacher = "shapes-t2i"' in result.output
    assert "num_intervals = 50" in result.output  # inherited from distill-lcm
    flat = write(tmp_path, "flat.toml", result.output)
    assert load_recipe(flat)[1:3] == load_recipe("distill-lcm-shapes-t2i")[1:3]
    typo = write(tmp_path, "typo.toml", 'extends = "shapes-t2i"\n[recipe]\nschedule_shfit = 4.0\n')
    result = CliRunner().invoke(app, ["recipes", "--show", str(typo)])
    assert result.exit_code != 0 and "schedule_shfit" not in result.output
    assert "unknown key(s) 'schedule_shfit'. Valid keys are:" in str(result.exception)
    for name, path in list_recipes().items():  # every shipped recipe survives the round trip
        flat = write(tmp_path, f"{name}.toml", recipe_as_toml(read_recipe_file(path)))
        assert load_recipe(flat)[1:3] == load_recipe(name)[1:3], name


def test_train_command_lists_and_refuses_unknown(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0 and "shapes-t2i" in result.output
    result = runner.invoke(app, ["train", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "no recipe file or shipped recipe named 'nope'" in str(
        result.exception
    )


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_pixel_recipe_smoke(dataset, tmp_path):
    from diffusers import DDPMPipeline

    from difflab.zoo import load_pipeline

    recipe = write(
        tmp_path,
        "pixel.toml",
        f"""
kind = "pixel"
[recipe]
dataset = "{dataset}"
image_size = 8
dataset_length = 16
block_out_channels = [8, 16]
norm_num_groups = 8
sample_steps = 2
"""
        + TINY_TRAIN,
    )
    figures = run_recipe(recipe, tmp_path / "run")
    assert figures["steps"] == 2
    pipeline = load_pipeline(tmp_path / "run" / "pipeline")
    if dataset == "digits":
        images = pipeline(["seven", 3], steps=2, guidance=2.0)
        assert len(images) == 2 and images[0].size == (8, 8)
        with pytest.raises(ValueError, match="unknown class 'eleven'.*names zero, one"):
            pipeline(["eleven"], steps=2)
    else:
        assert len(pipeline(3, steps=2)) == 3
        plain = DDPMPipeline.from_pretrained(tmp_path / "run" / "pipeline")
        assert plain.unet.config.sample_size == 8
        assert plain.scheduler.config.clip_sample  # so plain diffusers clips x0 as difflab does
    assert pipeline.clip_sample  # the recipe's default


def test_ship_stores_fp16_and_loads_back_in_fp32(tiny_pipeline, tmp_path):
    from safetensors.torch import load_file

    from difflab.pipelines.text_to_image import TextToImagePipeline
    from difflab.zoo import ship

    target = ship(tiny_pipeline, "tiny", "# tiny\n", zoo_dir=tmp_path)
    weights = load_file(target / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(t.dtype == torch.float16 for t in weights.values())
    assert (target / "MODEL_CARD.md").read_text() == "# tiny\n" and not (
        target / "text_encoder"
    ).exists()
    loaded = TextToImagePipeline.from_pretrained(target)
    assert next(loaded.unet.parameters()).dtype == torch.float32
    assert next(tiny_pipeline.unet.parameters()).dtype == torch.float32  # the original is untouched
    a = tiny_pipeline.latents("a red circle", steps=3, guidance=2.0, sampler="ddim", seed=1)
    b = loaded.latents("a red circle", steps=3, guidance=2.0, sampler="ddim", seed=1)
    assert torch.allclose(a, b, atol=0.05 * a.abs().max())
    ship(tiny_pipeline, "tiny", "# again\n", zoo_dir=tmp_path)  # replacing keeps one folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.parametrize(
    "option, message",
    [
        ('denoiser = "mlp"', 'unknown denoiser .mlp.*"unet" or "dit"'),
        # latents are never clipped, so an epsilon model on the cosine schedule (alpha-bar_T ~
        # 2e-9) could not be sampled
        ('schedule = "cosine"', 'epsilon prediction on the cosine.*"v_prediction"'),
    ],
)
def test_bad_text_to_image_options_are_refused_before_training(
    option, message, tiny_vae_run, tmp_path
):
    vae_dir, _ = tiny_vae_run
    recipe = write(
        tmp_path,
        "t2i.toml",
        f'kind = "text_to_image"\n[recipe]\nvae = "{vae_dir / "vae"}"\n{option}\n' + TINY_TRAIN,
    )
    with pytest.raises(ValueError, match=message):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing encoded or trained first


def test_image_size_the_network_cannot_take_is_refused(tmp_path):
    recipe = write(tmp_path, "v.toml", 'kind = "vae"\n[recipe]\nimage_size = 30\n' + TINY_TRAIN)
    with pytest.raises(ValueError, match="image size 30 is not divisible by 4.*multiple of 4"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_encoding_cache_key_follows_its_inputs(tiny_vae_run, prompt_encoder):
    from difflab.data.shapes import ShapesDataset
    from difflab.recipes.text_to_image import encoding_key

    vae_dir = tiny_vae_run[0] / "vae"
    key = encoding_key(vae_dir, prompt_encoder, ShapesDataset(length=8, size=16, seed=0))
    assert key == encoding_key(vae_dir, prompt_encoder, ShapesDataset(length=8, size=16, seed=0))
    for other in (
        ShapesDataset(length=8, size=16, seed=1),
        ShapesDataset(length=9, size=16, seed=0),
        ShapesDataset(length=8, size=32, seed=0),
        ShapesDataset(length=8, size=16, seed=0, relation_wording="plain"),
        ShapesDataset(length=8, size=16, seed=0, relation_probability=0.6),
    ):
        assert encoding_key(vae_dir, prompt_encoder, other) != key
    default = ShapesDataset(length=8, size=16, seed=0, relation_probability=0.3)
    assert encoding_key(vae_dir, prompt_encoder, default) == key


def test_caption_states_are_encoded_once_for_pixel_and_latent_sets(
    tiny_vae_run, prompt_encoder, monkeypatch, tmp_path
):
    """The text encoder runs once for two encodings of the same scenes (pixel space at 16 px and
    VAE latents); the states it gave are the ones the second set holds."""
    from difflab.data.shapes import ShapesDataset
    from difflab.recipes import text_to_image

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    calls = []
    encode = text_to_image.encode_captions

    def counted(unique, *args, **kwargs):
        calls.append(len(unique))
        return encode(unique, *args, **kwargs)

    monkeypatch.setattr(text_to_image, "encode_captions", counted)
    data = ShapesDataset(length=10, size=16, seed=5)
    pixels = text_to_image.cached_encode_dataset(data, None, None, prompt_encoder)
    vae_dir, vae = text_to_image.load_frozen_vae(str(tiny_vae_run[0] / "vae"))
    latents = text_to_image.cached_encode_dataset(data, vae, vae_dir, prompt_encoder)
    assert len(calls) == 1 and calls[0] == len(pixels.table)
    assert torch.equal(pixels.table, latents.table)
    assert torch.equal(pixels.caption_rows, latents.caption_rows)
    assert pixels.latents.shape[1:] == (3, 16, 16) and latents.latents.shape[1:] != (3, 16, 16)
    # the states are stored once: the image-set files name the captions file instead
    from safetensors.torch import load_file

    (captions_file,) = tmp_path.glob("encoded/captions-*.safetensors")
    image_sets = [f for f in tmp_path.glob("encoded/*.safetensors") if f != captions_file]
    assert len(image_sets) == 2 and all("table" not in load_file(f) for f in image_sets)
    # a deleted captions file is encoded again, to the same states
    captions_file.unlink()
    again = text_to_image.cached_encode_dataset(data, None, None, prompt_encoder)
    assert len(calls) == 2 and torch.equal(again.table, pixels.table)
    # other captions (another seed) are encoded anew
    text_to_image.cached_encode_dataset(
        ShapesDataset(length=10, size=16, seed=6), None, None, prompt_encoder
    )
    assert len(calls) == 3


def test_encoded_sets_in_the_older_single_file_layout_are_still_read(
    prompt_encoder, monkeypatch, tmp_path
):
    """Cache files written before caption states got their own file hold latents, rows and the
    states together; they are read as they are, without encoding anything."""
    from safetensors.torch import save_file

    from difflab.data.shapes import ShapesDataset
    from difflab.recipes import text_to_image

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    data = ShapesDataset(length=6, size=16, seed=2)
    encoded = text_to_image.encode_dataset(data, None, prompt_encoder)
    key = text_to_image.encoding_key(None, prompt_encoder, data)
    (tmp_path / "encoded").mkdir()
    save_file(
        {"latents": encoded.latents, "caption_rows": encoded.caption_rows,
         "table": encoded.table},
        tmp_path / "encoded" / f"{key}.safetensors",
    )  # fmt: skip

    def must_not_encode(*args, **kwargs):
        raise AssertionError("the cached encoding was not used")

    monkeypatch.setattr(text_to_image, "encode_images", must_not_encode)
    read = text_to_image.cached_encode_dataset(data, None, None, prompt_encoder)
    assert torch.equal(read.latents, encoded.latents) and torch.equal(read.table, encoded.table)


def test_rendering_workers_encode_the_same_training_set(prompt_encoder, monkeypatch):
    """Scenes rendered by DataLoader workers (used where spare cores exist) give the same
    encoded set, in the same order, as rendering in the main process."""
    from difflab.data.shapes import ShapesDataset
    from difflab.recipes import text_to_image

    data = ShapesDataset(length=12, size=16, seed=3)
    monkeypatch.setattr(text_to_image, "rendering_workers", lambda: 0)
    serial = text_to_image.encode_dataset(data, None, prompt_encoder, batch_size=5)
    monkeypatch.setattr(text_to_image, "rendering_workers", lambda: 2)
    parallel = text_to_image.encode_dataset(data, None, prompt_encoder, batch_size=5)
    assert torch.equal(serial.latents, parallel.latents)
    assert torch.equal(serial.caption_rows, parallel.caption_rows)
    assert torch.equal(serial.table, parallel.table)
    assert serial.latents.shape == (12, 3, 16, 16)


def test_cached_latents_fetch_whole_batches_like_single_examples():
    """``CachedLatents.__getitems__`` (one indexing operation per batch, no collation) yields
    exactly the batches that per-example fetching and default collation give."""
    from torch.utils.data import default_collate

    from difflab.recipes.text_to_image import CachedLatents
    from difflab.train.data import DataPosition, data_stream, epoch_batches

    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 3, (10,), generator=g)
    data = CachedLatents(torch.randn(10, 2, 2, 2, generator=g), rows, torch.randn(3, 4, 5).half())
    expected = [
        default_collate([data[i] for i in indices])
        for epoch in (0, 1)
        for _, indices in epoch_batches(10, 4, 0, DataPosition(epoch, 0))
    ]
    for workers in (0, 2):
        stream = data_stream(data, 4, 0, DataPosition(), num_workers=workers)
        for want in expected:  # two epochs of two batches (10 examples, batches of 4)
            _, batch = next(stream)
            assert batch.keys() == want.keys()
            for key in want:
                assert batch[key].dtype == want[key].dtype == torch.float32
                assert torch.equal(batch[key], want[key])


def test_a_subset_of_per_example_data_is_still_collated():
    """A ``Subset`` has ``__getitems__`` too, but it returns a list of examples: the Trainer's
    stream collates those (only a dataset that returns a finished batch is passed through)."""
    from torch.utils.data import Subset, TensorDataset

    from difflab.train.data import DataPosition, data_stream

    data = Subset(TensorDataset(torch.arange(10.0)), list(range(8)))
    _, batch = next(data_stream(data, 4, 0, DataPosition()))
    assert isinstance(batch, list) and len(batch) == 1 and batch[0].shape == (4,)


def test_init_from_starts_training_at_a_trained_pipelines_weights(tiny_vae_run, tmp_path):
    from difflab.recipes import text_to_image
    from difflab.schedules import make_schedule

    vae_dir, _ = tiny_vae_run
    body = f"""
image_size = 16
dataset_length = 16
{DENOISER_OPTIONS["unet"]}
sample_steps = 2
"""
    first = write(
        tmp_path,
        "a.toml",
        f'kind = "text_to_image"\n[recipe]\nvae = "{vae_dir / "vae"}"\n' + body + TINY_TRAIN,
    )
    trained = run_recipe(first, tmp_path / "a")["pipeline"]
    # learning rate ~0: the continued run's weights are the ones it started from
    second = write(
        tmp_path,
        "b.toml",
        f'kind = "text_to_image"\n[recipe]\nvae = "{trained}"\n'
        f'init_from = "{trained}"\n' + body + TINY_TRAIN + "learning_rate = 1e-12\n",
    )
    run_recipe(second, tmp_path / "b")
    start = load_file(tmp_path / "a/pipeline/unet/diffusion_pytorch_model.safetensors")
    end = load_file(tmp_path / "b/pipeline/unet/diffusion_pytorch_model.safetensors")
    assert start.keys() == end.keys()
    assert all(torch.allclose(start[k], end[k], atol=1e-8) for k in start)
    # (without init_from, b would start at the seed's random weights, which two updates of
    # the first run moved far beyond 1e-8)

    _, options, _, _ = load_recipe(second)
    vae = text_to_image.load_frozen_vae(trained)[1]
    schedule = text_to_image.recipe_schedule(options)
    wider = text_to_image.latent_denoiser(
        dataclasses.replace(options, block_out_channels=(16, 64)), 4, 4
    )
    with pytest.raises(ValueError, match="not the recipe's architecture.*block_out_channels"):
        text_to_image.start_from_pipeline(wider, trained, vae, schedule)
    same = text_to_image.latent_denoiser(options, 4, 4)
    with pytest.raises(ValueError, match="another latent space.*set vae = "):
        text_to_image.start_from_pipeline(same, trained, None, schedule)
    with pytest.raises(ValueError, match="another noise schedule.*beta_start"):
        text_to_image.start_from_pipeline(same, trained, vae, make_schedule("linear"))
    with pytest.raises(FileNotFoundError, match="no denoiser weights"):
        text_to_image.start_from_pipeline(same, str(tmp_path), vae, schedule)


def test_shapes_t2i_v_recipe_trains_and_stores_its_shifted_v_schedule(tiny_vae_run, tmp_path):
    """The shipped shapes-t2i-v recipe (a GPU recipe) runs a few steps at tiny sizes; its folder
    samples with what it trained on: v-prediction on the 4x-shifted cosine schedule."""
    from difflab.pipelines.text_to_image import TextToImagePipeline
    from difflab.schedules import make_schedule, shifted_schedule

    vae_dir, _ = tiny_vae_run
    recipe = write(
        tmp_path,
        "v.toml",
        f'extends = "shapes-t2i-v"\n[recipe]\nvae = "{vae_dir / "vae"}"\nimage_size = 16\n'
        f"dataset_length = 16\n{DENOISER_OPTIONS['unet']}\nsample_steps = 2\n"
        + TINY_TRAIN
        + 'mixed_precision = "no"\nnum_workers = 0\n',
    )
    _, options, _, _ = load_recipe(recipe)
    assert (options.weighting, options.relation_wording) == ("uniform", "plain")
    run_recipe(recipe, tmp_path / "run")
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    expected = shifted_schedule(make_schedule("cosine", prediction_type="v_prediction"), 4.0)
    assert loaded.schedule.prediction_type == "v_prediction"
    assert torch.allclose(loaded.schedule.alphas_cumprod, expected.alphas_cumprod, rtol=1e-5)
    (image,) = loaded("a red circle to the left of a blue square", steps=2, seed=0)
    assert image.size == (16, 16)
