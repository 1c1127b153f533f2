"""The FID Inception-v3 built by difflab (difflab.models.inception): architecture, safetensors
loading with clear errors, and use as --features of `difflab eval`."""

import json

import pytest
import torch
from safetensors.torch import save_file
from test_feature_nets import invoke, write_shapes_pngs

from difflab.models.inception import (
    InceptionV3Features,
    is_inception_weights,
    load_inception_v3,
)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Random weights (with non-trivial batch-norm statistics) in the released layout, fp16."""
    torch.manual_seed(0)
    net = InceptionV3Features()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / "inception.safetensors"
    save_file({k: v.half() for k, v in net.state_dict().items()}, str(path))
    return path


def test_architecture_matches_torchvision_inception_v3():
    net = InceptionV3Features()
    # torchvision's inception_v3(aux_logits=False) has 23,834,568 parameters with a 1000-way
    # classifier; the FID graph's classifier has 1008 outputs (8 x 2049 more).
    assert sum(p.numel() for p in net.parameters()) == 23_834_568 + 8 * 2049
    names = net.state_dict()
    assert names["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert names["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert "Mixed_5b.branch_pool.bn.running_var" in names and "AuxLogits" not in str(names)


def test_load_and_features(weights_file):
    net = load_inception_v3(weights_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.Conv2d_1a_3x3.bn.running_var.dtype == torch.float32
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = net(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert (features >= 0).all()  # an average of ReLU outputs
    # resizing to 299 is the only preprocessing: a 299 x 299 input goes straight in
    big = torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear")
    torch.testing.assert_close(net(big), net.pool3(big))
    torch.testing.assert_close(net(big), features)
    # grey images are repeated to RGB
    grey = images[:, :1]
    torch.testing.assert_close(net(grey), net(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"takes images \[B, 1 or 3, H, W\]"):
        net(torch.zeros(1, 4, 32, 32))


def test_bad_weights_files(tmp_path, weights_file):
    with pytest.raises(FileNotFoundError, match="difflab downloads nothing"):
        load_inception_v3(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(1000, 2048), "extra": torch.zeros(1)}, str(other))
    with pytest.raises(ValueError, match=r"not the FID Inception-v3.*missing.*1 unexpected"):
        load_inception_v3(other)
    assert is_inception_weights(weights_file) and not is_inception_weights("shapes-features")


def test_cli_eval_with_inception_features(weights_file, tmp_path):
    a = write_shapes_pngs(tmp_path / "a", 4)
    out = tmp_path / "kid.json"
    result = invoke("kid", "--images", a, "--reference", "shapes", "--features", weights_file,
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["features"]["dim"] == 2048 and report["features"]["folder"] == str(weights_file)
    assert report["features"]["resized"]["evaluated"] == "8x8 -> 299x299"
    assert report["num_images"] == 4 and report["values"]["kid_std"] >= 0
    # FID needs more images than Inception's 2048 features: refused before any work
    result = invoke("fid", "--images", a, "--reference", "shapes", "--features", weights_file,
                    "--out", out)  # fmt: skip
    assert result.exit_code == 2 and "needs at least D + 1 = 2049 images" in result.output


def test_grey_model_with_inception_features(weights_file, tmp_path):
    """The digits model's grey samples go to Inception repeated to RGB (no channel error)."""
    from difflab.eval.distribution import evaluate_distribution

    reference = write_shapes_pngs(tmp_path / "ref", 3, size=16)
    report = evaluate_distribution(
        "kid", reference=str(reference), model="digits", features=str(weights_file),
        num_images=3, steps=2, progress=False,
    )  # fmt: skip
    assert report["features"]["dim"] == 2048 and report["num_images"] == 3
    assert report["evaluated"]["size"] == [16, 16] and report["values"]["kid_std"] >= 0
