"""Shared blocks: generator halo (receptive field), tiling exactness, feature taps, PatchGAN."""

import pytest
import torch
from torch import nn

from vstain.models.blocks.patchgan import PatchGANDiscriminator
from vstain.models.blocks.receptive import input_span
from vstain.models.blocks.resnet_generator import ResnetGenerator

VARIANTS = {
    "pix2pix": dict(antialias=False, antialias_up=False, n_blocks=9),
    "cut": dict(antialias=True, antialias_up=True, n_blocks=9),
    "mixed": dict(antialias=True, antialias_up=False, n_blocks=6),
    "mixed-up": dict(antialias=False, antialias_up=True, n_blocks=6),
}


def local_generator(**kwargs) -> ResnetGenerator:
    """Batch norm in eval mode, so each output pixel depends only on its receptive field.

    Kaiming x 0.8 weights keep the signal alive through all blocks without saturating tanh.
    """
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=4, norm="batch", **kwargs)
    for m in gen.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data *= 0.8
    return gen.eval()


def empirical_radius(gen: ResnetGenerator, size: int = 288) -> int:
    """Largest distance from an output pixel to an input pixel with non-zero gradient."""
    worst = 0
    for c in (size // 2, size // 2 + 1, size // 2 + 2, size // 2 + 3):  # all stride phases
        x = torch.rand(1, 3, size, size, requires_grad=True)
        gen(x)[0, :, c, c].sum().backward()
        ys, xs = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
        worst = max(worst, int((ys - c).abs().max()), int((xs - c).abs().max()))
    return worst


@pytest.mark.parametrize("name", VARIANTS)
def test_halo_covers_the_receptive_field(name):
    gen = local_generator(**VARIANTS[name])
    radius = empirical_radius(gen)
    assert gen.halo() % 4 == 0
    assert radius <= gen.halo() < radius + 8  # covers it, and is not wastefully large


@pytest.mark.parametrize("name", ["pix2pix", "cut"])
def test_centre_crop_of_a_tile_equals_the_whole_image_output(name):
    gen = local_generator(**VARIANTS[name])
    halo, tile, y0, x0 = gen.halo(), 32, 104, 96
    image = torch.rand(1, 3, 2 * halo + 240, 2 * halo + 240)
    with torch.no_grad():
        whole = gen(image)[..., y0 : y0 + tile, x0 : x0 + tile]

        def tiled(h):
            window = image[..., y0 - h : y0 + tile + h, x0 - h : x0 + tile + h]
            return gen(window)[..., h : h + tile, h : h + tile]

        torch.testing.assert_close(tiled(halo), whole, rtol=0, atol=1e-5)
        half = halo // 8 * 4
        assert (tiled(half) - whole).abs().max() > 1e-4  # half the halo is not enough


def test_encoder_features_follow_cut_layer_ids():
    gen = ResnetGenerator(ngf=8, n_blocks=9)  # CUT default layout
    layers = [0, 4, 8, 12, 16]
    x = torch.rand(2, 3, 64, 64)
    feats = gen.encode(x, layers)
    assert [f.shape[1] for f in feats] == gen.feature_channels(layers) == [3, 16, 32, 32, 32]
    assert [f.shape[-1] for f in feats] == [70, 64, 32, 16, 16]  # layer 0 is the 3-px pad
    out, feats_too = gen(x, layers)
    torch.testing.assert_close(out, gen(x))
    for a, b in zip(feats, feats_too, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="layer ids"):
        gen.encode(x, [99])


def test_generator_output_range_and_shape():
    gen = ResnetGenerator(ngf=8, n_blocks=2, spectral_norm=True)
    y = gen(torch.rand(2, 3, 48, 64) * 2 - 1)
    assert y.shape == (2, 3, 48, 64)
    assert y.min() >= -1 and y.max() <= 1
    assert any(k.endswith("weight_orig") for k in gen.state_dict())


def test_patchgan_is_the_70px_pix2pix_discriminator():
    disc = PatchGANDiscriminator(in_channels=6, ndf=8)
    assert disc(torch.rand(1, 6, 256, 256)).shape == (1, 1, 30, 30)
    x = torch.rand(1, 6, 128, 128, requires_grad=True)
    disc.eval()(x)[0, 0, 7, 7].backward()
    ys, xs = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    assert int(ys.max() - ys.min()) + 1 == 70 and int(xs.max() - xs.min()) + 1 == 70


@pytest.mark.parametrize(
    "layers",
    [
        [nn.ReflectionPad2d(3), nn.Conv2d(1, 1, 7)],
        [nn.Conv2d(1, 1, 4, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=2, dilation=2)],
        [nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1), nn.ReLU()],
        [nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1)],
    ],
)
def test_input_span_is_the_gradient_support(layers):
    """Exact spans, per output index (phase), against what autograd says each output reads."""
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand_like(p) + 0.1)  # positive: no cancellation, ReLU stays open
    x = torch.rand(1, 1, 40, 40, requires_grad=True)
    y = net(x)
    for o in range(8, 12):
        (grad,) = torch.autograd.grad(y[0, 0, o, 5], x, retain_graph=True)
        rows = grad[0, 0].abs().sum(1).nonzero().flatten()
        assert input_span(net, o, o) == (rows.min().item(), rows.max().item())
