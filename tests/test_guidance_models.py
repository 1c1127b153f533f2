"""Classifier and CLIP guidance on networks (difflab.guidance's log-probabilities and guides), the
noise-aware classifier (a FeatureNet told the log-SNR), its recipe, the guided `difflab
generate`, and the figures of difflab.eval.guidance."""

import functools
import math
import re

import pytest
import torch
from typer.testing import CliRunner

from difflab import samplers
from difflab.cli import app
from difflab.guidance import (
    chain_guides,
    classifier_guide,
    classifier_log_prob,
    clip_log_prob,
    dynamic_threshold,
    gradient_guidance,
    log_prob_gradient,
    parse_targets,
    static_threshold,
    threshold_guide,
    thresholded,
    timestep_log_snr,
)
from difflab.models.feature_nets import (
    FeatureNet,
    FeatureNetConfig,
    Head,
    load_feature_network,
    save_feature_network,
)
from difflab.oracle import example_mixture, fit_statistics
from difflab.recipes.features import shapes_heads
from difflab.schedules import make_schedule

SCHEDULE = make_schedule("linear", 1000)
runner = CliRunner()


class ExactClassifier(torch.nn.Module):
    """A 'classifier' of the 2-D mixture's components whose logits are exact: told the log-SNR
    lambda, it evaluates the posterior p(k | x_t) at abar = sigmoid(lambda). As a multi-class
    head its logits are log w_k N(...); as a multi-label head log p / (1 - p) (so that
    log sigmoid(logit) = log p(k | x_t))."""

    def __init__(self, mixture, kind: str) -> None:
        super().__init__()
        self.mixture, self.kind = mixture, kind
        heads = (Head("component", kind, ("a", "b", "c")),)
        self.config = FeatureNetConfig(heads=heads, noise_aware=True)

    def logits(self, x, log_snr):
        alpha_bar = torch.sigmoid(log_snr.double())
        if self.kind == "multiclass":
            return {"component": self.mixture.log_joint(x, alpha_bar)}
        log_p = self.mixture.log_posterior(x, alpha_bar)
        return {"component": log_p - torch.log1p(-log_p.exp().clamp(max=1 - 1e-12))}


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_classifier_guidance_of_an_exact_classifier_samples_the_conditional(kind):
    """Through classifier_log_prob (t -> log-SNR -> the classifier) and classifier_guide, the
    exact classifier's guidance at s = 1 turns the exact mixture denoiser into the exact
    denoiser of one component (Dhariwal & Nichol 2021, Eq. 14): samples must fit it alone."""
    mixture = example_mixture(2)
    guide = classifier_guide(ExactClassifier(mixture, kind), [("component", "c")], 1.0)
    model = guide(mixture.denoiser(SCHEDULE), SCHEDULE)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = fit_statistics(mixture.component(2), samplers.heun(model, SCHEDULE, x_T, 40))
    assert fit.max_abs_z < 5 and fit.chi2 < 3, fit


def test_the_log_snr_is_the_schedules():
    t = torch.tensor([0, 499, 999])
    expected = torch.log(SCHEDULE.alpha_bar(t) / (1 - SCHEDULE.alpha_bar(t)))
    assert torch.allclose(timestep_log_snr(SCHEDULE, t, torch.zeros(1)), expected.float())


def tiny_classifier(heads=None, noise_aware=True, seed=0, **changes) -> FeatureNet:
    torch.manual_seed(seed)
    config = FeatureNetConfig(image_size=8, channels=(8, 8), layers_per_block=1, norm_groups=4,
                              heads=heads or shapes_heads(), noise_aware=noise_aware, **changes)  # fmt: skip
    return FeatureNet(config).eval()


def test_classifier_log_prob_is_the_sum_of_the_heads_log_probabilities():
    net = tiny_classifier()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([10, 500, 900])
    targets = [("colour", "red"), ("shape", "circle"), ("count", "2")]
    logits = net.logits(x, log_snr=timestep_log_snr(SCHEDULE, t, x))
    heads = {h.name: h for h in net.config.heads}
    expected = (
        torch.nn.functional.logsigmoid(logits["colour"][:, heads["colour"].labels.index("red")])
        + torch.nn.functional.logsigmoid(logits["shape"][:, heads["shape"].labels.index("circle")])
        + logits["count"].log_softmax(1)[:, heads["count"].labels.index("2")]
    )
    assert torch.allclose(classifier_log_prob(net, SCHEDULE, targets)(x, t), expected, atol=1e-6)
    per_sample = [[("colour", "red")], [("shape", "star")], [("colour", "blue"), ("size", "small")]]
    values = classifier_log_prob(net, SCHEDULE, per_sample)(x, t)
    alone = [classifier_log_prob(net, SCHEDULE, p)(x[i : i + 1], t[i : i + 1])
             for i, p in enumerate(per_sample)]  # fmt: skip
    assert torch.allclose(values, torch.cat(alone), atol=1e-6)


def test_targets_are_parsed_and_checked():
    heads = shapes_heads()
    assert parse_targets("colour=red, shape=circle", heads) == [("colour", "red"),
                                                                  ("shape", "circle")]  # fmt: skip
    assert parse_targets("red,circle,2", heads) == [("colour", "red"), ("shape", "circle"),
                                                    ("count", "2")]  # fmt: skip
    with pytest.raises(ValueError, match="unknown target 'colour=teal'.*colour: red"):
        parse_targets("colour=teal", heads)
    with pytest.raises(ValueError, match="'teal' is no label"):
        parse_targets("teal", heads)
    with pytest.raises(ValueError, match="no target"):
        parse_targets(" , ", heads)
    net = tiny_classifier()
    with pytest.raises(ValueError, match="multi-class: guide toward one"):
        classifier_log_prob(net, SCHEDULE, [("count", "1"), ("count", "2")])
    with pytest.raises(ValueError, match="unknown target hue=red"):
        classifier_log_prob(net, SCHEDULE, [("hue", "red")])


def test_guidance_refuses_networks_that_only_know_clean_images(prompt_encoder):
    from difflab.models.clip import CLIPConfig, ShapesCLIP

    clean = tiny_classifier(noise_aware=False)
    with pytest.raises(ValueError, match="needs a noise-aware network.*noise_aware = true"):
        classifier_log_prob(clean, SCHEDULE, [("colour", "red")])
    clip = ShapesCLIP(CLIPConfig(image_size=8, channels=(8, 8), layers_per_block=1,
                                 norm_groups=4, grid=2, embed_dim=16), prompt_encoder)  # fmt: skip
    with pytest.raises(ValueError, match="CLIP guidance needs a noise-aware"):
        clip_log_prob(clip, SCHEDULE, ["a red circle"])
    with pytest.raises(ValueError, match="not noise-aware"):
        clean.logits(torch.zeros(1, 3, 8, 8), log_snr=0.0)


def test_clip_guidance_follows_the_gradient_of_the_noise_aware_clip_logit(prompt_encoder):
    from difflab.models.clip import CLIPConfig, ShapesCLIP

    torch.manual_seed(0)
    clip = ShapesCLIP(CLIPConfig(image_size=8, channels=(8, 8), layers_per_block=1,
                                 norm_groups=4, grid=2, embed_dim=16, noise_aware=True),
                      prompt_encoder).eval()  # fmt: skip
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([100, 700])
    log_prob = clip_log_prob(clip, SCHEDULE, ["a red circle"])
    lam = timestep_log_snr(SCHEDULE, t, x)
    cos = (clip.encode_image(x, lam) * clip.encode_text(["a red circle"])).sum(1)
    assert torch.allclose(log_prob(x, t), clip.scale * cos, atol=1e-5)
    grad = log_prob_gradient(log_prob)(x, t)

    def eps_model(x_t, t_):
        return 0.1 * x_t

    guided = gradient_guidance(eps_model, SCHEDULE, log_prob_gradient(log_prob), 2.5)(x, t)
    shift = 2.5 * (1 - SCHEDULE.alpha_bar(t, like=x)).sqrt() * grad  # Eq. 14
    assert torch.allclose(guided, eps_model(x, t) - shift, atol=1e-5)
    assert grad.abs().sum() > 0


def test_threshold_guide_and_chain_match_their_definitions():
    def wild(x, t):
        return 3 * torch.sin(2 * x) + x

    x, t = (
        torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
        torch.full((4,), 300),
    )
    expected = thresholded(wild, SCHEDULE, functools.partial(dynamic_threshold, percentile=0.9))
    assert torch.equal(threshold_guide("dynamic", 0.9)(wild, SCHEDULE)(x, t), expected(x, t))
    net = tiny_classifier()
    both = chain_guides(classifier_guide(net, [("colour", "red")], 2.0), None,
                        threshold_guide("static"))  # fmt: skip
    by_hand = thresholded(
        gradient_guidance(wild, SCHEDULE, log_prob_gradient(
            classifier_log_prob(net, SCHEDULE, [("colour", "red")])), 2.0),
        SCHEDULE,
        static_threshold,
    )  # fmt: skip
    x8 = torch.randn(2, 3, 8, 8)
    t8 = torch.tensor([400, 400])
    assert torch.allclose(both(wild, SCHEDULE)(x8, t8), by_hand(x8, t8))
    assert chain_guides(None, None) is None
    with pytest.raises(ValueError, match="unknown thresholding 'soft'.*static, dynamic"):
        threshold_guide("soft")
    with pytest.raises(ValueError, match="percentile"):
        threshold_guide("dynamic", 2.0)


def test_noise_aware_feature_net_reads_the_noise_level_and_round_trips(tmp_path):
    net = tiny_classifier()
    x = torch.randn(2, 3, 8, 8)
    clean = net.logits(x)["shape"]
    assert torch.equal(clean, net.logits(x, log_snr=net.config.log_snr_max)["shape"])
    assert not torch.allclose(clean, net.logits(x, log_snr=-5.0)["shape"])
    per_image = net.logits(x, log_snr=torch.tensor([-5.0, 3.0]))["shape"]
    assert torch.allclose(per_image[1], net.logits(x[1:], log_snr=3.0)["shape"][0], atol=1e-6)
    save_feature_network(net, tmp_path / "cls")
    loaded = load_feature_network(tmp_path / "cls")
    assert loaded.config.noise_aware and torch.equal(loaded.logits(x, log_snr=-2.0)["shape"],
                                                     net.logits(x, log_snr=-2.0)["shape"])  # fmt: skip
    shipped = load_feature_network("shapes-features")  # its config predates the noise keys
    assert not shipped.config.noise_aware and shipped.noise_embedding is None
    with pytest.raises(ValueError, match="noise_features must be even"):
        tiny_classifier(noise_features=3)


def test_noise_aware_classifier_recipe_smoke(tmp_path):
    from difflab.recipes import run_recipe

    recipe = tmp_path / "classifier.toml"
    recipe.write_text("""
kind = "features"
[recipe]
dataset = "digits"
image_size = 8
channels = [8, 8]
layers_per_block = 1
norm_groups = 4
noise_aware = true
[train]
max_steps = 2
batch_size = 8
checkpoint_every = 2
sample_every = 0
log_every = 1
""")
    figures = run_recipe(recipe, tmp_path / "run")
    assert set(figures["heldout_accuracy_noisy"]) == {"5.0", "0.0", "-5.0"}
    net = load_feature_network(tmp_path / "run" / "features")
    assert net.config.noise_aware and net.config.name == "digits-classifier"


@pytest.fixture(scope="module")
def pixel_folders(tmp_path_factory):
    from difflab.data.real import DIGIT_WORDS
    from difflab.models.networks import pixel_unet
    from difflab.pipelines.pixel import PixelPipeline

    tmp = tmp_path_factory.mktemp("guided")
    torch.manual_seed(0)
    small = dict(block_out_channels=(8, 16), norm_num_groups=8)
    PixelPipeline(pixel_unet(8, 3, **small).eval(), SCHEDULE).save_pretrained(tmp / "uncond")
    PixelPipeline(pixel_unet(8, 1, num_class_embeds=11, **small).eval(), SCHEDULE,
                  list(DIGIT_WORDS)).save_pretrained(tmp / "digits")  # fmt: skip
    save_feature_network(tiny_classifier(), tmp / "classifier")
    save_feature_network(tiny_classifier(heads=(Head("digit", "multiclass", DIGIT_WORDS),),
                                         in_channels=1), tmp / "digits-classifier")  # fmt: skip
    return tmp


def test_generate_with_classifier_guidance_and_thresholding(pixel_folders, tmp_path):
    from PIL import Image

    from difflab.generate import settings_from_png

    out = tmp_path / "out"
    args = ["generate", "--model", str(pixel_folders / "uncond"), "--classifier-guidance",
            "red,circle", "--guidance-model", str(pixel_folders / "classifier"), "--scale", "4",
            "--threshold", "dynamic", "--steps", "3", "-n", "2", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first = out / "000-red-circle-seed0.png"
    s = settings_from_png(first)
    assert (s.prompt, s.classifier_guidance, s.scale, s.threshold) == ("", "red,circle", 4.0,
                                                                       "dynamic")  # fmt: skip
    again = tmp_path / "again"
    result = runner.invoke(app, ["generate", "--from-png", str(first), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert Image.open(next(again.glob("*.png"))).tobytes() == Image.open(first).tobytes()
    plain = tmp_path / "plain"
    result = runner.invoke(app, ["generate", "--model", str(pixel_folders / "uncond"),
                                 "--steps", "3", "--out", str(plain)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(next(plain.glob("*.png"))).tobytes() != Image.open(first).tobytes()


def test_class_guided_digits_guide_the_null_class(pixel_folders):
    from difflab.guidance import classifier_guide
    from difflab.zoo import load_pipeline

    pipe = load_pipeline(pixel_folders / "digits")
    classifier = load_feature_network(pixel_folders / "digits-classifier")
    guide = classifier_guide(classifier, [("digit", "seven")], 5.0)
    unguided = pipe.sample([None, None], 3, 1.0, seed=0)
    guided = pipe.sample([None, None], 3, 1.0, seed=0, guide=guide)
    assert guided.shape == (2, 1, 8, 8) and not torch.allclose(guided, unguided)
    # the null class through classifier-free guidance is the unconditional model itself
    assert torch.allclose(pipe.sample([None, None], 3, 4.0, seed=0), unguided)
    result = runner.invoke(app, ["generate", "--model", str(pixel_folders / "digits"),
                                 "--classifier-guidance", "digit=seven", "--guidance-model",
                                 str(pixel_folders / "digits-classifier"), "--steps", "2",
                                 "--out", str(pixel_folders / "digits-out")])  # fmt: skip
    assert result.exit_code == 0, result.output


def test_guided_generation_refuses_what_it_cannot_do(pixel_folders, tiny_pipeline_folder, tmp_path):
    cases = [
        (["a red circle", "--model", str(tiny_pipeline_folder), "--threshold", "dynamic"],
         "act on pixels, and .* is a latent model"),
        (["a red circle", "--model", str(pixel_folders / "uncond")], "unconditional and takes no"),
        (["--model", str(pixel_folders / "uncond"), "--clip-guidance"], "steers toward the prompt"),
        (["--model", str(pixel_folders / "uncond"), "--threshold", "soft"], None),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, ["generate", *args, "--steps", "2", "--out", str(tmp_path)])
        assert result.exit_code != 0
        if message:
            assert result.exception is not None
            assert re.search(message, str(result.exception)), str(result.exception)
        else:
            assert "--threshold must be one of static, dynamic" in result.output


def test_guidance_figures_match_their_definitions():
    from difflab.data.shapes import SceneConfig, render_batch, sample_scene, scene_rng
    from difflab.eval.guidance import (
        attribute_hits,
        matched_fidelity,
        pairwise_distance,
        saturation,
    )

    images = torch.tensor([-1.0, -0.99, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3)
    assert saturation(images) == pytest.approx(4 / 6)  # -0.99 is 1 in 8 bits, 0.999 is 255
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert pairwise_distance(features) == pytest.approx((5 + 4 + 3) / 3)
    assert matched_fidelity([0.1, 0.5, 0.9], [3.0, 2.0, 1.0], 0.7) == pytest.approx(1.5)
    assert matched_fidelity([0.1, 0.5], [3.0, 2.0], 0.95) is None
    scenes = [sample_scene(scene_rng(0, "validation", i), SceneConfig(max_objects=1))
              for i in range(3)]  # fmt: skip
    obj = scenes[0].objects[0]
    hits = attribute_hits(render_batch(scenes, 32), [("colour", obj.colour), ("shape", obj.shape)])
    assert hits["per_target"][f"colour={obj.colour}"] >= 1 / 3 and hits["images"] == 3
    assert hits["all"] == hits["bound"] >= 1 / 3
    assert math.isclose(attribute_hits(render_batch(scenes[:1], 32), [("count", "1")])["all"], 1.0)
