"""ImplicitStainer: shapes, gradients, the implicit function's two paths, halo, tiling, TTA
uncertainty, checkpoints and config errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.models.conftest import GradState
from vstain.models import (
    ModelError,
    SimpleTrainState,
    create,
    load_checkpoint,
    model_configs,
    predict_batch,
    save_checkpoint,
)
from vstain.models.blocks.local_implicit import LocalImplicitFunction
from vstain.models.blocks.tta import DIHEDRAL, dihedral_outputs, transform, untransform
from vstain.tiles import TileGrid, read_window

NAME = "implicit-stainer"


def model(seed: int = 0, card: dict | None = None, **changes):
    """The ``small`` config with ``changes``; random perceptual features (no warning)."""
    torch.manual_seed(seed)
    cfg = {**model_configs(NAME)["small"], "perceptual_backbone": None, **changes}
    return create(NAME, cfg, **(card or {}))


@pytest.mark.parametrize("config", ["small", "paper"])
def test_forward_shapes_and_range(config):
    torch.manual_seed(0)
    m = create(NAME, config)
    x = torch.rand(1, 3, 64, 64)
    out = m.predict(x)
    assert out.ihc.shape == (1, 3, 64, 64) and out.uncertainty is None
    assert out.ihc.min() >= 0 and out.ihc.max() <= 1
    width = m.config["conv_channels"][-1] + m.config["swin_dim"]
    assert m.features(x).shape == (1, width, 64, 64)  # full resolution, concatenated


@pytest.mark.parametrize(
    "changes, losses",
    [({}, {"l1", "perceptual"}), ({"train_queries": 300, "lambda_perceptual": 0.0}, {"l1"})],
    ids=["all-pixels", "sampled-pixels"],
)
def test_gradient_reaches_both_encoders_and_the_mlp(pair, changes, losses):
    m = model(**changes).train()
    state = GradState()
    assert set(m.training_step(pair, state)) == losses
    assert state.names == ["model"]
    for part in (m.conv, m.swin, m.implicit):
        for pname, p in part.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_training_records_the_perceptual_backbone(pair):
    m = model()
    assert m.card.perceptual_backbone is None
    m.training_step(pair, SimpleTrainState.for_model(m.train(), 1))
    assert m.card.perceptual_backbone == "vgg16-random-seed0"
    assert not any(k.startswith("_frozen") or "perceptual" in k for k in m.state_dict())


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("coords", ["cell", "patch"])
def test_dense_path_equals_queried_pixels(k, coords):
    torch.manual_seed(0)
    f = LocalImplicitFunction(5, k, [16, 16], coords, period=8)
    feats = torch.randn(2, 5, 24, 16)
    index = torch.stack([torch.randperm(24 * 16)[:40] for _ in range(2)])
    dense = f(feats).flatten(2).gather(2, index[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(f.query(feats, index), dense, rtol=1e-5, atol=1e-5)


def test_neighbourhoods_are_unfold_columns():
    f = LocalImplicitFunction(4, 1, [8], "cell", period=8)
    feats = torch.randn(1, 4, 8, 12)
    every = torch.arange(8 * 12)[None]
    expected = F.unfold(feats, 3, padding=1).transpose(1, 2)
    torch.testing.assert_close(f.neighbourhoods(feats, every), expected)


def gradient_radius(m, size: int = 96) -> int:
    """Farthest input pixel with non-zero gradient from an output pixel, over all 8 phases, in
    eval mode (as the tile engine runs it; training batch norm couples all pixels)."""
    m.eval()
    worst = 0
    for c in range(size // 2, size // 2 + 8):
        x = torch.rand(1, 3, size, size, requires_grad=True)
        m.implicit(m.features(x))[0, :, c, c].sum().backward()
        ys, xs = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
        worst = max(worst, int((ys - c).abs().max()), int((xs - c).abs().max()))
    return worst


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"swin_depth": 6, "conv_channels": [8] * 12, "swin_dim": 16},  # the paper's depths
        {"encoders": "conv"},
        {"encoders": "swin", "k": 2},
    ],
    ids=["small", "paper-depths", "conv-only", "swin-only-k2"],
)
def test_halo_covers_the_receptive_field(changes):
    m = model(**changes)
    radius, halo = gradient_radius(m), m.receptive_halo()
    assert halo % m.size_multiple == 0 and m.card.halo == halo
    assert radius <= halo < radius + m.size_multiple  # covers it, not wastefully large


def stitched(m, image: np.ndarray, grid: TileGrid, **options) -> dict[str, np.ndarray]:
    """Centre crops of the model on every window of ``grid``, stitched (C x H x W)."""
    out = {}
    for t in grid.tiles():
        window = torch.from_numpy(read_window(image, t.window)).permute(2, 0, 1)[None]
        pred = m.predict(window, **options).outputs()
        x0, y0, x1, y1 = t.core
        for name, value in pred.items():
            target = out.setdefault(name, np.zeros((value.shape[1], *image.shape[:2]), np.float32))
            target[:, y0:y1, x0:x1] = value[0][(slice(None), *t.inner)].numpy()
    return out


def engine_grid(m, image: np.ndarray, halo: int | None = None, align: int | None = None):
    """The tile engine's grid of 32 px tiles with the model's halo and alignment (or others)."""
    halo = m.receptive_halo() if halo is None else halo
    return TileGrid(image.shape[:2], 32, halo, align or m.size_multiple)


def whole_and_tiled(m, grid_args: dict, **options):
    image = np.random.default_rng(0).random((96, 96, 3), dtype=np.float32)
    whole = m.predict(torch.from_numpy(image).permute(2, 0, 1)[None], **options).outputs()
    tiled = stitched(m, image, engine_grid(m, image, **grid_args), **options)
    return {name: value[0].numpy() for name, value in whole.items()}, tiled


#: away from the image border, where the whole-image run sees zero padding, tiles mirror padding
INSIDE = (slice(None), slice(16, -16), slice(16, -16))


@pytest.mark.parametrize("uncertainty", [False, True])
def test_tiled_output_equals_whole_image_away_from_the_border(uncertainty):
    m = model(seed=1)
    whole, tiled = whole_and_tiled(m, {}, uncertainty=uncertainty)
    assert set(tiled) == set(whole) == ({"ihc", "uncertainty"} if uncertainty else {"ihc"})
    for name, value in whole.items():
        np.testing.assert_allclose(tiled[name][INSIDE], value[INSIDE], atol=2e-5)


@pytest.mark.parametrize(
    "changes, grid_args",
    [
        ({"coords": "patch"}, {}),  # the paper's literal coordinates depend on the tile origin
        ({}, {"halo": 20, "align": 4}),  # windows off the 8-px grid: other Swin windows
        ({}, {"halo": 0}),
    ],
    ids=["patch-coords", "misaligned", "no-halo"],
)
def test_tiling_is_not_exact_without_cell_coords_alignment_or_halo(changes, grid_args):
    whole, tiled = whole_and_tiled(model(seed=1, **changes), grid_args)
    assert np.abs(tiled["ihc"] - whole["ihc"])[INSIDE].max() > 1e-3


def test_dihedral_transforms_are_distinct_and_invertible():
    x = torch.arange(2 * 3 * 8 * 16, dtype=torch.float32).view(2, 3, 8, 16)
    images = [transform(x, t, f) for t, f in DIHEDRAL]
    assert len({tuple(i.flatten().tolist()) for i in images}) == 8
    for (t, f), image in zip(DIHEDRAL, images, strict=True):
        assert torch.equal(untransform(image, t, f), x)
    assert torch.equal(dihedral_outputs(lambda v: 2 * v, x), (2 * x).expand(8, *x.shape))


def test_uncertainty_is_the_std_over_flips_and_rotations():
    m = model(seed=2)
    x = torch.rand(2, 3, 32, 48)
    out = m.predict(x, uncertainty=True)
    assert torch.equal(out.ihc, m.predict(x).ihc)
    assert out.uncertainty.shape == (2, 1, 32, 48) and out.uncertainty.min() >= 0
    views = torch.stack([untransform(m.predict(transform(x, t, f)).ihc, t, f) for t, f in DIHEDRAL])
    expected = views.std(0, correction=0).mean(1, keepdim=True)
    torch.testing.assert_close(out.uncertainty, expected, rtol=1e-4, atol=1e-6)
    assert out.uncertainty.mean() > 1e-4  # an untrained model is not flip-equivariant


def test_uncertainty_reaches_the_tile_engine_batch_function():
    m = model().eval()
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    plain = predict_batch(m, batch, torch.device("cpu"))
    asked = predict_batch(m, batch, torch.device("cpu"), uncertainty=True)
    assert set(plain) == {"ihc"} and set(asked) == {"ihc", "uncertainty"}
    assert asked["uncertainty"].shape == (2, 1, 32, 32)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, pair):
    m = model(card={"markers": ["CK8/18"], "pixel_size": 0.5}).train()
    state = SimpleTrainState.for_model(m, 2)
    for _ in range(2):
        m.training_step(pair, state)
        state.end_step()
    path = save_checkpoint(m, tmp_path / "implicit.safetensors")
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.card == m.card
    for name, value in m.predict(pair["he"], uncertainty=True).outputs().items():
        assert torch.equal(loaded.predict(pair["he"], uncertainty=True).outputs()[name], value)


def test_fuse_sum_and_single_encoders():
    x = torch.rand(1, 3, 16, 16)
    summed = model(fuse="sum", conv_channels=[16, 32])
    assert summed.features(x).shape == (1, 32, 16, 16)
    assert model(encoders="swin").conv is None and model(encoders="conv").swin is None


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"fuse": "sum", "conv_channels": [16, 24]}, "conv_channels"),
        ({"window_size": 16}, "window_size must divide 8"),
        ({"train_queries": 100}, "lambda_perceptual to 0"),
        ({"encoders": "vit"}, "encoders must be one of"),
        ({"coords": "global"}, "coords must be one of"),
        ({"conv_norm": "instance"}, "conv_norm must be one of"),
    ],
)
def test_invalid_configs_raise_model_error(changes, match):
    with pytest.raises(ModelError, match=match):
        model(**changes)


def test_conv_norm_none_keeps_the_layer_keys_of_checkpoints_before_it():
    """Checkpoints written before ``conv_norm`` existed load as ``"none"`` (registry legacy)."""
    plain, normed = model(conv_norm="none"), model()
    assert not any("running_mean" in k for k in plain.conv.state_dict())
    assert any("running_mean" in k for k in normed.conv.state_dict())
    old = {k: v for k, v in plain.card.config.items() if k != "conv_norm"}
    assert create(NAME, old).config["conv_norm"] == "none"


def test_inputs_must_be_multiples_of_the_window_grid():
    with pytest.raises(ModelError, match="multiples of 8"):
        model().predict(torch.rand(1, 3, 60, 64))
