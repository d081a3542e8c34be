"""Losses: GAN objectives, Gaussian-pyramid L1, PatchNCE and the VGG16 perceptual loss."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vstain.models import ModelError
from vstain.models.losses import (
    GAUSS3,
    PatchSampleMLP,
    discriminator_loss,
    gaussian_pyramid,
    gaussian_pyramid_l1,
    generator_loss,
    patch_nce,
    patch_nce_loss,
)
from vstain.models.perceptual import (
    IMAGENET_NAME,
    RANDOM_NAME,
    PerceptualLoss,
    cached_vgg16_path,
    random_vgg16_features,
)

# ---------------------------------------------------------------- GAN losses


def test_lsgan_values():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert discriminator_loss(ones, zeros, "lsgan") == 0
    assert discriminator_loss(zeros, ones, "lsgan") == 1.0  # 0.5 * (1 + 1)
    assert generator_loss(zeros, "lsgan") == 1.0
    assert generator_loss(ones, "lsgan") == 0
    assert generator_loss(torch.full((3,), 3.0), "lsgan") == 4.0


def test_nonsaturating_values():
    zeros = torch.zeros(5)
    assert discriminator_loss(zeros, zeros, "nonsaturating").item() == pytest.approx(math.log(2))
    assert generator_loss(zeros, "nonsaturating").item() == pytest.approx(math.log(2))
    logits = torch.tensor([-2.0, 0.5, 3.0])
    bce = F.binary_cross_entropy_with_logits(logits, torch.ones(3))  # pix2pix's "vanilla" G loss
    assert generator_loss(logits, "nonsaturating").item() == pytest.approx(bce.item())
    # the generator's gradient does not vanish when D confidently rejects the fake
    fake = torch.tensor([-10.0], requires_grad=True)
    generator_loss(fake, "nonsaturating").backward()
    assert fake.grad.abs().item() > 0.99


def test_unknown_gan_mode():
    with pytest.raises(ValueError, match="GAN mode"):
        generator_loss(torch.zeros(1), "wgan")


# ---------------------------------------------------------------- Gaussian pyramid


def test_gauss3_matches_kornia_sigma_1():
    assert GAUSS3.tolist() == pytest.approx([0.274068619, 0.451862762, 0.274068619])


def test_pyramid_shapes_and_constants():
    x = torch.full((1, 3, 64, 64), 0.3)
    bci = gaussian_pyramid(x, 4, "pyramidpix2pix")
    assert [p.shape[-1] for p in bci] == [64, 32, 16, 8]
    asp = gaussian_pyramid(x, 6, "asp")
    assert [p.shape[-1] for p in asp] == [64, 32, 16, 8, 4, 2]
    for level in bci + asp:  # blurring preserves a constant image
        torch.testing.assert_close(level, torch.full_like(level, 0.3))


@pytest.mark.parametrize("form", ["pyramidpix2pix", "asp"])
def test_pyramid_l1_weights_levels(form):
    real = torch.rand(2, 3, 64, 64)
    weights = [25.0, 10.0, 5.0, 1.0]
    assert gaussian_pyramid_l1(real, real, weights, form) == 0
    shifted = gaussian_pyramid_l1(real + 0.1, real, weights, form)
    assert shifted.item() == pytest.approx(0.1 * sum(weights), rel=1e-4)  # a constant offset


def test_pyramid_l1_coarse_levels_ignore_fine_noise():
    """A +-a checkerboard error counts fully at level 0 and is blurred away further up."""
    real = torch.zeros(1, 3, 64, 64)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.2 - 0.1
    fake = real + checker
    assert gaussian_pyramid_l1(fake, real, [1.0, 0, 0, 0]).item() == pytest.approx(0.1)
    assert gaussian_pyramid_l1(fake, real, [0, 1.0, 1.0, 1.0]).item() < 0.01


# ---------------------------------------------------------------- PatchNCE


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def test_patch_nce_exact_value_for_orthogonal_features():
    p, tau = 16, 0.5  # a temperature that keeps the loss well above float32 resolution
    feats = torch.eye(p)  # one image, p patches, each its own unit vector
    expected = -1 / tau + math.log(math.exp(1 / tau) + math.exp(-10 / tau) + (p - 1))
    loss = patch_nce_loss(feats, feats, batch_size=1, tau=tau).item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_patch_nce_prefers_matching_locations():
    torch.manual_seed(0)
    k = unit(torch.randn(2 * 64, 32))
    same = patch_nce_loss(k.clone(), k, batch_size=2)
    shuffled = patch_nce_loss(k[torch.randperm(128)], k, batch_size=2)
    assert same < 0.5 < math.log(64) - 1 < shuffled
    per_patch = patch_nce_loss(k.clone(), k, batch_size=2, reduction="none")
    assert per_patch.shape == (128,) and per_patch.mean().item() == pytest.approx(same.item())


def test_patch_nce_gradient_reaches_queries_only():
    torch.manual_seed(0)
    q = unit(torch.randn(32, 8)).requires_grad_()
    k = unit(torch.randn(32, 8)).requires_grad_()
    patch_nce_loss(q, k, batch_size=1).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None


def test_patch_sample_mlp_shapes_norms_and_shared_locations():
    torch.manual_seed(0)
    sampler = PatchSampleMLP([3, 16], nc=32)
    feats = [torch.randn(2, 3, 20, 20), torch.randn(2, 16, 10, 10)]
    samples, ids = sampler(feats, num_patches=50)
    assert [s.shape for s in samples] == [(100, 32), (100, 32)]
    torch.testing.assert_close(samples[0].norm(dim=1), torch.ones(100))
    again, ids_again = sampler(feats, num_patches=50, patch_ids=ids)
    for a, b in zip(samples, again, strict=True):
        torch.testing.assert_close(a, b)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids_again, strict=True))
    few, _ = sampler(feats, num_patches=256)  # capped at the number of locations
    assert few[1].shape == (200, 32)


def test_patch_nce_over_layers_is_lower_for_the_same_image():
    torch.manual_seed(0)
    sampler = PatchSampleMLP([8, 16])
    feats = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16)]
    other = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16)]
    same = patch_nce(sampler, feats, feats, num_patches=64)
    different = patch_nce(sampler, other, feats, num_patches=64)
    assert same < different


# ---------------------------------------------------------------- perceptual loss


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_perceptual_falls_back_with_one_warning(empty_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="vstain.models.perceptual"):
        loss = PerceptualLoss("vgg16", layers=(3, 8))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "random-but-fixed VGG16" in warnings[0].getMessage()
    assert loss.backbone_name == RANDOM_NAME

    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert loss(a, a).item() == 0
    assert loss(a, b).item() > 0
    again = PerceptualLoss(None, layers=(3, 8))  # the same fixed features, no warning asked
    assert again(a, b).item() == loss(a, b).item()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_perceptual_gradient_reaches_the_fake_only():
    loss = PerceptualLoss(None, layers=(3,))
    fake = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(fake, torch.rand(1, 3, 16, 16)).backward()
    assert fake.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    assert loss.state_dict().keys() == {
        f"features.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")
    }


def test_perceptual_uses_the_cached_imagenet_file(empty_hub, caplog):
    features = random_vgg16_features()
    with torch.no_grad():
        for p in features.parameters():
            p.mul_(-1)  # weights that differ from the random fallback
    cached = cached_vgg16_path()
    cached.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, cached)
    with caplog.at_level(logging.WARNING):
        loss = PerceptualLoss("vgg16", layers=(3,))
    assert loss.backbone_name == IMAGENET_NAME and not caplog.records
    torch.testing.assert_close(loss.features[0].weight, features[0].weight)


def test_perceptual_from_a_local_file(tmp_path):
    features = random_vgg16_features()
    path = tmp_path / "vgg16_features.safetensors"
    save_file({k: v.contiguous() for k, v in features.state_dict().items()}, path)
    loss = PerceptualLoss(path, layers=(3,))
    assert loss.backbone_name == "vgg16-file:vgg16_features.safetensors"
    torch.testing.assert_close(loss.features[2].weight, features[2].weight)


def test_perceptual_file_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        PerceptualLoss(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="does not hold VGG16 weights"):
        PerceptualLoss(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="Cannot read VGG16 weights"):
        PerceptualLoss(tmp_path / "junk.pth")
