"""K-Stain: keypoints, affine fit and warp, tiling contract, training, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.models.conftest import make_pair
from tests.models.test_models import RecordingState
from vstain.color.optics import HED, concentrations_to_rgb
from vstain.models import ModelError, create, load_checkpoint, model_configs, save_checkpoint
from vstain.models.blocks.affine import (
    apply_affine,
    corner_distance,
    fit_affine,
    normalising_matrix,
    random_affines,
    robust_fit_affine,
    to_normalised,
    to_pixel_affine,
    warp_affine,
)
from vstain.models.blocks.hskd import anchor_grid, hematoxylin, window_log_prior
from vstain.models.blocks.keypoints import centre_of_mass, gaussian_heatmaps
from vstain.models.blocks.patchgan import PatchGANDiscriminator
from vstain.models.perceptual import IMAGENET_NAME, cached_vgg16_path, random_vgg16_features
from vstain.models.train_state import SimpleTrainState

IDENTITY = torch.eye(3)[None]


def known_affine(angle_deg=7.0, scale=1.1, shift=(0.15, -0.1)) -> torch.Tensor:
    t = math.radians(angle_deg)
    return torch.tensor(
        [
            [scale * math.cos(t), -scale * math.sin(t), shift[0]],
            [scale * math.sin(t), scale * math.cos(t), shift[1]],
            [0.0, 0.0, 1.0],
        ]
    )[None]


def test_centre_of_mass_of_one_hot_heatmaps_is_their_cell_centre():
    logits = torch.full((2, 3, 4, 8), -1e4)
    cells = [(0, 0), (3, 7), (2, 5)]  # (row, column)
    for k, (r, c) in enumerate(cells):
        logits[:, k, r, c] = 0.0
    points = centre_of_mass(logits, stride=8)
    expected = torch.tensor([[(c + 0.5) * 8 - 0.5, (r + 0.5) * 8 - 0.5] for r, c in cells])
    assert torch.allclose(points, expected.expand(2, 3, 2))


def test_gaussian_heatmaps_peak_at_the_keypoint_with_the_given_sigma():
    points = torch.tensor([[[5.0, 9.0], [20.0, 3.0]]])
    maps = gaussian_heatmaps(points, (16, 32), stride=1, sigma=2.0)
    assert maps.shape == (1, 2, 16, 32)
    assert maps[0, 0, 9, 5] == 1 and maps[0, 1, 3, 20] == 1
    assert math.isclose(maps[0, 0, 9, 7].item(), math.exp(-0.5), rel_tol=1e-6)
    assert maps.max() == 1


def test_affine_fit_recovers_a_known_transform_from_exact_points():
    torch.manual_seed(0)
    src = torch.rand(1, 40, 2) * 2 - 1
    true = known_affine()
    dst = apply_affine(true, src)
    assert torch.allclose(fit_affine(src, dst, ridge=0.0), true, atol=1e-5)
    # the default damping biases the answer only slightly towards the identity
    damped = fit_affine(src, dst, ridge=1e-2)
    assert (damped - true).abs().max() < 0.05
    assert (damped - true).abs().max() > 1e-4


def test_affine_fit_is_stable_with_noisy_points():
    torch.manual_seed(1)
    src = torch.rand(4, 128, 2) * 2 - 1
    true = known_affine().expand(4, 3, 3)
    dst = apply_affine(true, src) + 0.01 * torch.randn(4, 128, 2)
    assert (fit_affine(src, dst, ridge=0.0) - true).abs().max() < 0.01


@pytest.mark.parametrize(
    "src",
    [
        torch.full((1, 16, 2), 0.3),  # coincident
        torch.stack([torch.linspace(-1, 1, 16), 0.5 * torch.linspace(-1, 1, 16)], -1)[None],
    ],
    ids=["coincident", "collinear"],
)
def test_degenerate_keypoints_give_a_finite_near_identity_affine_with_gradients(src):
    src = src.clone().requires_grad_(True)
    shift = torch.tensor([0.05, -0.02])
    affine = fit_affine(src, src + shift, ridge=1e-2)
    assert torch.isfinite(affine).all()
    assert torch.allclose(affine[0, :2, :2], torch.eye(2), atol=0.05)
    assert torch.allclose(affine[0, :2, 2], shift, atol=0.03)
    affine.sum().backward()
    assert torch.isfinite(src.grad).all() and src.grad.abs().sum() > 0
    homogeneous = torch.cat([src, torch.ones_like(src[..., :1])], dim=2)[0]
    assert torch.linalg.matrix_rank(homogeneous) < 3  # Eq. 4 alone would be singular here


def test_robust_fit_recovers_the_affine_that_a_plain_fit_misses_with_wrong_matches():
    """60 % of the matches are wrong (points 10-30 px off in a 256 px tile, as keypoints that
    matched different nuclei in the two sections): Tukey-weighted IRLS finds the inliers' affine."""
    torch.manual_seed(2)
    src = torch.rand(2, 64, 2) * 2 - 1
    true = known_affine(angle_deg=2.0, scale=1.02, shift=(0.03, -0.02)).expand(2, 3, 3)
    dst = apply_affine(true, src) + 0.002 * torch.randn(2, 64, 2)
    wrong = torch.rand(2, 64) < 0.6
    offsets = F.normalize(torch.randn(2, 64, 2), dim=2) * (0.08 + 0.16 * torch.rand(2, 64, 1))
    dst = torch.where(wrong[..., None], dst + offsets, dst)
    robust = robust_fit_affine(src, dst, ridge=1e-2, scale=3 / 128)
    plain = fit_affine(src, dst, ridge=1e-2)
    assert (corner_distance(robust, true) * 128 < 1.0).all()
    assert (corner_distance(plain, true) * 128 > 3.0).all()


def test_warp_with_the_identity_is_the_identity():
    image = torch.rand(2, 3, 24, 40)
    assert torch.allclose(warp_affine(image, IDENTITY.expand(2, 3, 3)), image, atol=1e-6)


def test_warp_moves_the_image_by_a_known_shift():
    size = (32, 48)
    image = torch.rand(1, 3, *size)
    pixels = torch.eye(3)[None].clone()
    pixels[0, :2, 2] = torch.tensor([3.0, -2.0])  # content moves 3 px right and 2 px up
    n = normalising_matrix(size, image)[None]
    warped = warp_affine(image, n @ pixels @ torch.linalg.inv(n))
    assert torch.allclose(warped[..., 0:30, 3:48], image[..., 2:32, 0:45], atol=1e-5)


def test_pixel_affine_agrees_with_the_normalised_one():
    size = (32, 48)
    points = torch.rand(1, 10, 2) * torch.tensor([48.0, 32.0])
    affine = known_affine()
    in_normalised = apply_affine(affine, to_normalised(points, size))
    in_pixels = to_normalised(apply_affine(to_pixel_affine(affine, size), points), size)
    assert torch.allclose(in_normalised, in_pixels, atol=1e-5)


@pytest.fixture
def model():
    """``small`` without the detector's pretraining, so a training step is Eq. 17's."""
    torch.manual_seed(0)
    cfg = {**model_configs("k-stain")["small"], "hskd_pretrain_steps": 0}
    return create("k-stain", cfg, markers=["CK8/18"], pixel_size=0.5)


def test_predict_gives_ihc_and_keypoints_inside_the_tile(model, pair):
    out = model.predict(pair["he"])
    n = model.config["n_keypoints"]
    assert out.ihc.shape == (1, 3, 64, 64) and out.ihc.min() >= 0 and out.ihc.max() <= 1
    assert out.keypoints.shape == (1, n, 2)
    assert out.keypoints.min() >= 0 and out.keypoints.max() <= 63
    assert set(model.card.outputs) == {"ihc", "keypoints"}


def test_correspondence_of_an_image_with_itself_is_the_identity(model, pair):
    c = model.correspond(pair["he"], pair["he"])
    assert torch.equal(c.he_keypoints, c.ihc_keypoints)  # one detector for both stains
    assert torch.allclose(c.affine, IDENTITY, atol=1e-5)
    assert c.displacement.abs().max() == 0 and c.residual.abs().max() < 1e-3


def test_correspondence_reports_keypoints_affine_and_displacements(model, pair):
    c = model.correspond(pair["he"], pair["ihc"])
    n = model.config["n_keypoints"]
    assert c.he_keypoints.shape == c.ihc_keypoints.shape == (1, n, 2)
    assert c.affine.shape == (1, 3, 3)
    assert torch.equal(c.displacement, c.ihc_keypoints - c.he_keypoints)
    assert torch.allclose(c.residual, c.ihc_keypoints - apply_affine(c.affine, c.he_keypoints))
    with pytest.raises(ModelError, match="tiles of one size"):
        model.correspond(pair["he"], pair["ihc"][..., :48, :48])


def test_tiled_output_equals_whole_image_output_for_the_same_keypoints(model):
    """The contract: with given keypoints, KEG is a conv net of reach ``card.halo``."""
    torch.manual_seed(2)
    halo, tile, size = model.card.halo, 32, 192
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    image = torch.rand(1, 3, size, size)
    keypoints = torch.rand(1, model.config["n_keypoints"], 2) * size
    whole = model.predict(image, keypoints=keypoints).ihc
    for y0, x0 in [(48, 48), (64, 112), (112, 64)]:
        window = image[..., y0 - halo : y0 + tile + halo, x0 - halo : x0 + tile + halo]
        shifted = keypoints - torch.tensor([x0 - halo, y0 - halo])
        out = model.predict(window, keypoints=shifted)
        assert torch.equal(out.keypoints, shifted)
        crop = out.ihc[..., halo : halo + tile, halo : halo + tile]
        assert torch.allclose(crop, whole[..., y0 : y0 + tile, x0 : x0 + tile], atol=1e-5)


def test_halo_is_the_generators_reach_rounded_up(model):
    image = torch.rand(1, 3, 160, 160, requires_grad=True)
    keypoints = torch.rand(1, model.config["n_keypoints"], 2) * 160
    model.eval().generator(image, keypoints)[0, :, 80, 80].sum().backward()
    rows, cols = (image.grad.abs().sum(dim=(0, 1)) > 0).nonzero().T
    reach = max((rows - 80).abs().max(), (cols - 80).abs().max()).item()
    assert reach <= model.card.halo < reach + model.size_multiple


def test_given_keypoints_must_fit(model, pair):
    with pytest.raises(ModelError, match=r"B x N x 2.*\(1, 64, 2\), got \(1, 5, 2\)"):
        model.predict(pair["he"], keypoints=torch.zeros(1, 5, 2))


def test_the_keypoint_loss_reaches_the_detector(model, pair):
    he, ihc = pair["he"] * 2 - 1, pair["ihc"] * 2 - 1
    he_kp, _, affine = model.align(he, ihc)
    moved = apply_affine(to_pixel_affine(affine, he.shape[-2:]), he_kp)
    loss = F.l1_loss(model.generator(warp_affine(he, affine), moved), ihc)
    loss.backward()
    grads = [p.grad for p in model.detector.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_hskd_learns_to_register_a_known_rotation_and_shift(model):
    """Detector + Eq. 4-6 trained on the warp's L1 alone recover a 5 degree rotation + shift."""
    image = make_pair(96)["ihc"] * 2 - 1
    t = math.radians(5)
    rotate = torch.tensor([[math.cos(t), -math.sin(t), 4.0], [math.sin(t), math.cos(t), -3.0]])
    whole = torch.cat([rotate, torch.tensor([[0.0, 0.0, 1.0]])])[None]  # pixels of the 96 px image
    n = normalising_matrix((96, 96), image)[None]
    moved = warp_affine(image, n @ whole @ torch.linalg.inv(n))
    src, dst = image[..., 16:80, 16:80], moved[..., 16:80, 16:80]
    crop = torch.eye(3)[None].clone()
    crop[0, :2, 2] = 16.0
    true = torch.linalg.inv(crop) @ whole @ crop  # the same map in the 64 px crops' pixels
    opt = torch.optim.Adam(model.detector.parameters(), 1e-3)
    for _ in range(100):
        _, _, affine = model.align(src, dst)
        loss = F.l1_loss(warp_affine(src, affine)[..., 8:56, 8:56], dst[..., 8:56, 8:56])
        opt.zero_grad()
        loss.backward()
        opt.step()
    found = model.correspond((src + 1) / 2, (dst + 1) / 2).affine
    assert (found[0, :2, :2] - true[0, :2, :2]).abs().max() < 0.01
    assert (found[0, :2, 2] - true[0, :2, 2]).abs().max() < 0.3


@pytest.mark.parametrize("prior", [0.0, 0.1])
def test_the_anchor_prior_spreads_untrained_keypoints_over_the_tile(prior, pair):
    """Without the prior, an untrained detector puts every keypoint near the tile centre."""
    torch.manual_seed(0)
    cfg = {**model_configs("k-stain")["small"], "hskd_prior": prior, "n_keypoints": 32}
    cfg.update(hskd_window=False, hskd_fine=False, hskd_input="rgb", hskd_gain=1.0)
    model = create("k-stain", cfg).eval()
    with torch.no_grad():
        points = model.detector(pair["he"] * 2 - 1)[0]  # N x 2 pixels of a 64 px tile
    anchors = anchor_grid(model.config["n_keypoints"]) * 64 - 0.5
    spread = points.std(dim=0).min()
    if prior:
        assert spread > 10 and (points - anchors).norm(dim=1).max() < 6
    else:
        assert spread < 2 and (points - 31.5).abs().max() < 4


def test_windowed_keypoints_stay_in_their_anchor_cells(pair):
    """With ``hskd_window`` each keypoint is the soft peak of its own cell of the anchor grid,
    and ``hskd_fine`` places keypoints on a stride-2 grid."""
    torch.manual_seed(0)
    model = create("k-stain", "small").eval()
    assert model.config["hskd_window"] and model.config["hskd_fine"]
    assert model.detector.stride == 2 and model.detector.stages[0][0].in_channels == 1
    with torch.no_grad():
        logits = model.detector.heatmaps(pair["he"] * 2 - 1)
        points = model.detector(pair["he"] * 2 - 1)[0]
    assert logits.shape[-2:] == (32, 32)
    cell = (anchor_grid(64) * 64 - 0.5) - points  # 8 rows x 8 columns of 8 x 8 px cells
    assert (cell.abs() <= 4).all()
    assert points.std(dim=0).min() > 10


def test_window_prior_gives_every_map_cell_to_exactly_one_keypoint():
    prior = window_log_prior(32, (16, 24), torch.zeros(()))
    assert prior.shape == (32, 16, 24)
    assert ((prior == 0).sum(dim=0) == 1).all()
    assert (prior[0, :4, :3] == 0).all() and (prior[31, 12:, 21:] == 0).all()
    with pytest.raises(ValueError, match="smaller than"):
        window_log_prior(32, (2, 24), torch.zeros(()))


def test_hematoxylin_input_separates_hematoxylin_from_dab():
    """The detector's hematoxylin channel is high on a hematoxylin-only pixel, near 0 on DAB."""
    conc = torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.0, 0.8], [0.0, 0.0, 0.0]]).numpy()
    rgb = torch.as_tensor(concentrations_to_rgb(conc, HED), dtype=torch.float32) / 255
    h = hematoxylin(rgb.T.reshape(1, 3, 1, 3) * 2 - 1)[0, 0, 0]
    assert abs(h[0] - 0.8) < 0.05 and abs(h[1]) < 0.05 and abs(h[2]) < 0.01


def test_anchor_grid_covers_the_unit_square_evenly():
    grid = anchor_grid(32)  # 4 rows x 8 columns
    assert grid.shape == (32, 2)
    assert torch.allclose(grid[:8, 0], (torch.arange(8) + 0.5) / 8)
    assert torch.allclose(grid[::8, 1], (torch.arange(4) + 0.5) / 4)


def test_checkpoints_from_before_the_prior_load_without_it():
    cfg = model_configs("k-stain")["small"]
    del cfg["hskd_prior"], cfg["hskd_pretrain_steps"]
    model = create("k-stain", cfg)
    assert model.detector.prior == 0.0 and model.config["hskd_pretrain_steps"] == 0


def test_pretraining_steps_train_the_detector_alone_on_drawn_affines_then_eq17_follows(pair):
    """The first ``hskd_pretrain_steps`` steps update HSKD only (its own Adam), with the corner and
    keypoint losses of pairs related by drawn affines; on a fixed batch and fixed draws they fall
    (the gradient path works); then the steps are Eq. 17's."""
    steps = 40
    torch.manual_seed(0)
    cfg = {**model_configs("k-stain")["small"], "hskd_pretrain_steps": steps}
    model = create("k-stain", cfg).train()
    frozen = [p.clone() for p in [*model.generator.parameters(), *model.discriminator.parameters()]]
    detector = [p.clone() for p in model.detector.parameters()]
    state = SimpleTrainState.for_model(model, steps + 1)
    history = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same drawn affines every step
        history.append(model.training_step(pair, state))
        state.end_step()
    assert set(history[0]) == {"hskd_corner_px", "hskd_cross_corner_px", "hskd_keypoint_px"}
    for key in ("hskd_corner_px", "hskd_keypoint_px"):
        assert history[-1][key] < 0.7 * history[0][key], (key, history[0], history[-1])
    others = [*model.generator.parameters(), *model.discriminator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(frozen, others, strict=True))
    assert not any(
        torch.equal(a, b) for a, b in zip(detector, model.detector.parameters(), strict=True)
    )

    recording = RecordingState(model.configure_optimizers())
    recording.step = steps
    model.training_step(pair, recording)
    assert recording.order == ["discriminator", "generator"]


def test_drawn_affines_stay_in_their_ranges():
    torch.manual_seed(0)
    drawn = random_affines(500, rotation=0.1, scale=0.05, shear=0.0, shift=0.2, like=IDENTITY)
    linear, shift = drawn[:, :2, :2], drawn[:, :2, 2]
    angle = torch.atan2(linear[:, 1, 0], linear[:, 0, 0])  # the rotation, bent by unequal scales
    assert angle.abs().max() <= 0.1 * 1.05 / 0.95 and angle.abs().max() > 0.09
    assert shift.abs().max() <= 0.2 and shift.abs().max() > 0.19
    scales = linear.norm(dim=1)  # column norms: the axes' scales times a rotation
    assert ((scales - 1).abs() <= 0.05 + 1e-6).all()
    assert torch.equal(drawn[:, 2], IDENTITY[0, 2].expand(500, 3))
    assert corner_distance(drawn, drawn).abs().max() == 0


def test_training_updates_d_then_g_and_reaches_every_weight(model, pair):
    model.train()
    state = RecordingState(model.configure_optimizers())
    losses = model.training_step(pair, state)
    assert state.order == ["discriminator", "generator"]
    assert set(losses) == {"d", "g_adv", "g_perc", "g_kp"}
    parts = {
        "generator": (model.generator, model.detector),
        "discriminator": (model.discriminator,),
    }
    for opt_name, modules in parts.items():
        for module in modules:
            for pname, p in module.named_parameters():
                grad = state.grads[opt_name][id(p)]
                assert grad is not None and grad.abs().sum() > 0, f"{opt_name}: {pname}"
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert model.card.perceptual_backbone.startswith("vgg16")


@pytest.mark.parametrize("switch", ["keg", "kgd", "align"])
def test_ablation_switches_train(switch, pair):
    torch.manual_seed(0)
    cfg = {**model_configs("k-stain")["small"], switch: False, "hskd_pretrain_steps": 0}
    model = create("k-stain", cfg).train()
    assert (model.generator.embedding is None) == (switch == "keg")
    assert isinstance(model.discriminator, PatchGANDiscriminator) == (switch == "kgd")
    losses = model.training_step(pair, RecordingState(model.configure_optimizers()))
    assert all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(("kgd_h", "moves"), [("keypoints", True), ("zero", False)])
def test_kgd_sees_the_keypoints_unless_its_h_is_zeroed(kgd_h, moves):
    cfg = {**model_configs("k-stain")["small"], "kgd_h": kgd_h, "sigma": 4.0}
    model = create("k-stain", cfg, seed=0).eval()
    ihc = torch.rand(1, 3, 64, 64)
    points = torch.rand(1, cfg["n_keypoints"], 2) * 63
    with torch.no_grad():
        before = model.discriminate(ihc, points)
        after = model.discriminate(ihc, (points + 9.0).clamp(max=63))
    assert (before - after).abs().max() > 1e-4 if moves else torch.equal(before, after)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hskd_stages", 5),
        ("sigma", 0.0),
        ("n_keypoints", 2),
        ("hskd_prior", -0.1),
        ("hskd_pretrain_steps", -1),
        ("hskd_pretrain_lr", 0.0),
        ("hskd_input", "lab"),
        ("robust_px", -1.0),
        ("hskd_gain", 0.0),
        ("kgd_h", "ones"),
    ],
)
def test_invalid_configs_are_refused(key, value):
    with pytest.raises(ModelError, match="Config of 'k-stain' is invalid"):
        create("k-stain", {**model_configs("k-stain")["small"], key: value})


def test_paper_config_follows_the_paper():
    cfg = model_configs("k-stain")["paper"]
    assert cfg["n_keypoints"] == 128 and cfg["n_blocks"] == 6 and cfg["sigma"] == 1.0
    assert (cfg["lambda_perc"], cfg["lambda_kp"], cfg["lr"]) == (1.0, 5.0, 2e-4)
    assert cfg["gan_mode"] == "nonsaturating"


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, model, pair):
    state = RecordingState(model.configure_optimizers())
    for _ in range(2):
        model.train().training_step(pair, state)
    path = save_checkpoint(model, tmp_path / "k.safetensors")
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.card == model.card
    assert not any(k.startswith("_perceptual") for k in loaded.state_dict())
    a, b = model.predict(pair["he"]), loaded.predict(pair["he"])
    assert torch.equal(a.ihc, b.ihc) and torch.equal(a.keypoints, b.keypoints)


def test_perceptual_loss_uses_imagenet_vgg16_from_the_torch_cache_of_torch_home(
    tmp_path, monkeypatch, pair
):
    """With torchvision's VGG16 file in $TORCH_HOME (a user's machine), K-Stain's Eq. 16 uses it
    and the card says so; a state dict of the right name and shape stands in for ImageNet's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    features = random_vgg16_features()
    with torch.no_grad():
        for p in features.parameters():
            p.mul_(-1)  # differs from the random fallback
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert cached_vgg16_path() == cached
    cached.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, cached)
    model = create("k-stain", "small")
    model.perceptual_loss(pair["ihc"] * 2 - 1, pair["ihc"] * 2 - 1)
    assert model.card.perceptual_backbone == IMAGENET_NAME
    torch.testing.assert_close(
        model.perceptual(torch.device("cpu")).features[0].weight, features[0].weight
    )
