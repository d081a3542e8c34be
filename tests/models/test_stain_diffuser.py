"""StainDiffuser and its variants: schedule and sampler closed forms, position-seeded noise, the
three training objectives, halo, tiling, determinism, uncertainty, checkpoints and errors."""

import math

import numpy as np
import pytest
import torch

from tests.models.conftest import GradState
from vstain.color.dab_mask import signed_distance
from vstain.errors import DatasetError
from vstain.models import ModelError, SimpleTrainState, create, load_checkpoint, save_checkpoint
from vstain.models import model_configs as configs
from vstain.models.base import to_model_range
from vstain.models.stain_diffuser.model import coarse_masks, instance_labels
from vstain.models.stain_diffuser.noise import position_noise
from vstain.models.stain_diffuser.samplers import SAMPLERS, Sampler
from vstain.models.stain_diffuser.schedule import LinearSchedule
from vstain.tiles import TileGrid, read_window
from vstain.train.datasets import MarkerDataset

NAMES = ["stain-diffuser", "stain-diffuser-bidirectional", "stain-diffuser-multi"]


def model(name="stain-diffuser", seed=0, card=None, randomise=True, **changes):
    """``small`` with ``changes``; zero-initialised output layers randomised so outputs vary."""
    torch.manual_seed(seed)
    m = create(name, {**configs(name)["small"], **changes}, **(card or {}))
    if randomise:
        for p in m.parameters():
            if not p.detach().any():
                torch.nn.init.normal_(p, 0.0, 0.05)
    return m


# --- schedule and sampler -------------------------------------------------------------------


def test_linear_betas_and_q_sample_match_the_closed_form():
    s = LinearSchedule(1000, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas.numpy(), betas)
    t = torch.tensor([0, 10, 999])
    abar = torch.tensor([math.prod(1 - betas[: k + 1]) for k in t.tolist()])
    torch.testing.assert_close(s.alphas_bar[t], abar.double())
    x0, eps = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    expected = abar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(s.q_sample(x0, t, eps), expected.float())
    assert s.alphas_bar[-1] < 1e-4  # x_T is (almost) pure noise
    torch.testing.assert_close(s.eps_from_x0(s.q_sample(x0, t, eps), t, x0), eps, atol=2e-3, rtol=0)


def test_x0_parametrisation_turns_the_unet_output_into_noise(pair):
    """A UNet that outputs the clean image gives the true noise: the loss is still eps-MSE."""
    m = model(parametrisation="x0", randomise=False)
    x0 = to_model_range(pair["ihc"], "[-1,1]")
    t, eps = torch.tensor([3]), torch.randn_like(x0)
    x_t = m.schedule.q_sample(x0, t, eps)
    m.branches["generation"].forward = lambda x, t, feats, direction: x0
    torch.testing.assert_close(m.predict_noise("generation", x_t, t, [], None), eps)


def test_x0_loss_weight_is_the_mse_of_the_implied_clean_image(pair):
    """Noise MSE / SNR(t) is the clean-image MSE, whichever step each image drew."""
    m = model(parametrisation="x0", loss_weight="x0", randomise=False)
    x0 = to_model_range(pair["ihc"], "[-1,1]").repeat(4, 1, 1, 1)
    guess = torch.rand_like(x0) * 2 - 1
    m.branches["generation"].forward = lambda x, t, feats, direction: guess
    loss = m.denoising_loss("generation", [], x0)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(guess, x0), rtol=1e-3, atol=0)
    assert configs("stain-diffuser")["paper"]["loss_weight"] == "eps"  # the paper's loss


def test_sampling_steps_are_trailing_and_full_for_t():
    s = LinearSchedule(100, 1e-3, 0.2)
    for name in SAMPLERS:
        assert Sampler(s, name, 5).timesteps == [99, 79, 59, 39, 19]
        assert Sampler(s, name, 100).timesteps == list(range(99, -1, -1))


def test_ancestral_step_is_the_papers_posterior():
    s, t = LinearSchedule(50, 1e-3, 0.3), 20
    x0 = torch.rand(1, 3, 4, 4) * 1.8 - 0.9
    x_t, z = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    ab, ab_prev, beta = (float(v) for v in (s.alphas_bar[t], s.alphas_bar[t - 1], s.betas[t]))
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # predicts exactly this x0
    mean = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * x_t) / (1 - ab)
    variance = (1 - ab_prev) * beta / (1 - ab)  # Eqs. 6 and 7
    found = Sampler(s, "ddpm", 50).step(x_t, eps, t, z)
    torch.testing.assert_close(found, mean + math.sqrt(variance) * z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver++"])
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_deterministic_samplers_with_the_true_noise_recover_x0(sampler, steps):
    s = LinearSchedule(50, 1e-3, 0.3)
    abar = s.alphas_bar.float()
    x0, x = torch.rand(1, 3, 8, 8) * 2 - 1, torch.randn(1, 3, 8, 8)
    solver = Sampler(s, sampler, steps)
    for t in solver.timesteps:
        eps = (x - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt()
        x = solver.step(x, eps, t)
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)


# --- position-seeded noise -------------------------------------------------------------------


def test_position_noise_depends_on_global_position_only():
    big = position_noise((1, 2), 3, (200, 150), (-40, 30))
    crop = position_noise((1, 2), 3, (70, 90), (10, 50))
    assert torch.equal(crop, big[:, 50:120, 20:110])
    assert not torch.equal(position_noise((1, 3), 3, (70, 90), (10, 50)), crop)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reaches_encoder_and_branches(name, pair):
    m = model(name).train()
    batch = {**pair, "marker": torch.tensor([1])} if name.endswith("multi") else pair
    state = GradState()
    losses = m.training_step(batch, state)
    assert state.names == ["model"] and all(np.isfinite(v) for v in losses.values())
    trained = {"stain-diffuser": {"generation", "segmentation"}}.get(name, {"generation"})
    trained = {"marker1"} if name.endswith("multi") else trained
    assert set(m.branches) >= trained
    for part, module in [("encoder", m.encoder), *m.branches.items()]:
        grads = [p.grad for p in module.parameters()]
        reached = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reached == (part == "encoder" or part in trained), part


def test_multi_stain_loss_sums_the_markers_of_the_batch():
    m = model("stain-diffuser-multi", randomise=False, marker_weights=[1.0, 2.0, 0.5]).train()
    batch = {"he": torch.rand(3, 3, 32, 32), "ihc": torch.rand(3, 3, 32, 32)}
    losses = m.training_step({**batch, "marker": torch.tensor([2, 0, 2])}, GradState())
    assert set(losses) == {"gen_0", "gen_2"}
    with pytest.raises(ModelError, match="needs each sample's 'marker'"):
        m.training_step(batch, GradState())
    with pytest.raises(ModelError, match=r"marker indices must be in 0 \.\. 2"):
        m.training_step({**batch, "marker": torch.tensor([0, 3, 1])}, GradState())


def test_bidirectional_batches_alternate_directions():
    m = model("stain-diffuser-bidirectional", randomise=False).train()
    batch = {"he": torch.rand(4, 3, 32, 32), "ihc": torch.rand(4, 3, 32, 32)}
    assert m.training_step(batch, GradState())["reverse_fraction"] == 0.5
    assert m.branches["generation"].direction.num_embeddings == 2


def test_noise_draws_noise_each_image_several_times(pair):
    m = model(randomise=False, noise_draws=3).train()
    sizes = []
    m.branches["generation"].register_forward_hook(lambda mod, args, out: sizes.append(len(out)))
    m.training_step(pair, GradState())
    assert sizes == [3]


def test_aux_targets_come_from_the_batch_mask_or_the_ihc(pair):
    mask = coarse_masks(pair["ihc"])
    assert mask.shape == (1, 1, 64, 64) and 0 < mask.mean() < 0.5  # DAB cells of the real IHC
    m = model(randomise=False)
    torch.testing.assert_close(m.aux_target(pair), mask * 2 - 1)
    given = torch.zeros_like(mask)
    given[..., 10:20, 10:20] = 1
    torch.testing.assert_close(m.aux_target({**pair, "mask": given}), given * 2 - 1)
    distance = model(randomise=False, aux_target="distance").aux_target({**pair, "mask": given})
    expected = torch.from_numpy(signed_distance(given[0, 0].numpy() > 0))
    torch.testing.assert_close(distance[0, 0], expected)
    assert "segmentation" not in model(randomise=False, aux_target="none").branches


def test_training_lowers_the_denoising_loss(pair):
    m = model(randomise=False, lr=1e-3).train()
    state = SimpleTrainState.for_model(m, 30)
    he, ihc = (to_model_range(pair[k], "[-1,1]").repeat(16, 1, 1, 1) for k in ("he", "ihc"))

    def loss() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return m.denoising_loss("generation", m.encoder(he), ihc).item()

    before = loss()
    for _ in range(30):
        m.training_step(pair, state)
        state.end_step()
    assert loss() < 0.85 * before


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_predict_shapes_and_ranges(name):
    m = model(name)
    out = m.predict(torch.rand(2, 3, 32, 48), steps=3, n_samples=2)
    assert out.ihc.shape == (2, 3, 32, 48) and out.ihc.min() >= 0 and out.ihc.max() <= 1
    assert out.uncertainty.shape == (2, 1, 32, 48) and out.uncertainty.min() >= 0
    assert out.uncertainty.mean() > 1e-3
    assert m.predict(torch.rand(1, 3, 32, 32), steps=2).uncertainty is None


def test_segmentation_branch_on_request():
    m = model()
    x = torch.rand(1, 3, 32, 32)
    assert m.predict(x, steps=2).segmentation is None
    seg = m.predict(x, steps=2, segment=True).segmentation
    assert seg.shape == (1, 1, 32, 32) and seg.dtype == torch.int64
    with pytest.raises(ModelError, match="without an auxiliary task"):
        model(aux_target="none").predict(x, steps=2, segment=True)


def test_instance_labels_are_the_connected_components_of_the_mask():
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 1:3, 1:3] = mask[0, 0, 5:7, 4:8] = mask[0, 0, 3, 3] = True  # 3 objects (4-conn.)
    labels = instance_labels(mask)
    assert labels.shape == mask.shape and labels.dtype == torch.int64
    assert torch.equal(labels > 0, mask)
    assert sorted(labels[0].unique().tolist()) == [0, 1, 2, 3] and labels[1].max() == 0
    assert labels[0, 0, 1:3, 1:3].unique().numel() == 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_is_deterministic_given_the_seed(sampler):
    m, x = model(), torch.rand(1, 3, 32, 32)
    first = m.predict(x, steps=4, sampler=sampler, seed=3).ihc
    assert torch.equal(m.predict(x, steps=4, sampler=sampler, seed=3).ihc, first)
    assert (m.predict(x, steps=4, sampler=sampler, seed=4).ihc - first).abs().max() > 1e-2


def test_multi_stain_predicts_every_marker_by_name():
    m = model("stain-diffuser-multi", card={"markers": ["ck818", "cd3", "ki67"]})
    x = torch.rand(1, 3, 32, 32)
    every = m.predict_markers(x, steps=2)
    assert list(every) == ["ck818", "cd3", "ki67"]
    assert torch.equal(every["cd3"].ihc, m.predict(x, steps=2, marker="cd3").ihc)
    assert not torch.equal(every["cd3"].ihc, every["ki67"].ihc)
    with pytest.raises(ModelError, match="Unknown marker 'her2'"):
        m.predict(x, marker="her2")


def gradient_radius(m, size: int = 232) -> int:
    """Farthest H&E or x_t pixel with non-zero gradient from an output pixel (8 phases), in
    eval mode (as the tile engine runs it; training batch norm couples all pixels)."""
    m.eval()
    worst = 0
    for c in range(size // 2, size // 2 + 8):
        he = torch.rand(1, 3, size, size, requires_grad=True)
        x_t = torch.randn(1, 3, size, size, requires_grad=True)
        eps = m.branches["generation"](x_t, torch.tensor([5]), m.encoder(he))
        eps[0, :, c, c].sum().backward()
        for grad in (he.grad, x_t.grad):
            ys, xs = (grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
            worst = max(worst, int((ys - c).abs().max()), int((xs - c).abs().max()))
    return worst


@pytest.mark.parametrize("he_norm", ["channel", "batch"])
def test_halo_covers_one_unet_evaluation(he_norm):
    m = model(he_norm=he_norm)
    radius, halo = gradient_radius(m), m.receptive_halo()
    assert halo % m.size_multiple == 0 and m.card.halo == halo
    assert radius <= halo < radius + 2 * m.size_multiple


def stitched(m, image: np.ndarray, **options) -> dict[str, np.ndarray]:
    """Centre crops of every window of the engine's grid, each told its origin, stitched."""
    grid = TileGrid(image.shape[:2], 144, m.receptive_halo(), m.size_multiple)
    out = {}
    for t in grid.tiles():
        window = torch.from_numpy(read_window(image, t.window)).permute(2, 0, 1)[None]
        pred = m.predict(window, origin=(t.window[1], t.window[0]), **options).outputs()
        x0, y0, x1, y1 = t.core
        for name, value in pred.items():
            target = out.setdefault(name, np.zeros((value.shape[1], *image.shape[:2]), np.float32))
            target[:, y0:y1, x0:x1] = value[0][(slice(None), *t.inner)].numpy()
    return out


@pytest.mark.slow  # 9 windows of 368 px: the 112 px halo of four UNet scales
def test_one_step_tiles_equal_the_whole_image_away_from_the_border():
    # one network evaluation (steps=1) at a single-step schedule whose x0 estimate is not clipped
    m = model(seed=1, timesteps=1, beta_start=0.5, beta_end=0.5)
    image = np.random.default_rng(0).random((288, 288, 3), dtype=np.float32)
    options = {"steps": 1, "segment": True, "n_samples": 2}
    whole = m.predict(torch.from_numpy(image).permute(2, 0, 1)[None], **options).outputs()
    tiled = stitched(m, image, **options)
    h = m.receptive_halo()
    inside = (slice(None), slice(h, -h), slice(h, -h))
    assert set(tiled) == set(whole) == {"ihc", "segmentation", "uncertainty"}
    for name in ("ihc", "uncertainty"):
        np.testing.assert_allclose(tiled[name][inside], whole[name][0].numpy()[inside], atol=1e-4)
    # instance ids are per window; the objects they label are the same
    mask = whole["segmentation"][0].numpy() > 0
    assert 0 < mask[inside].mean() < 1
    np.testing.assert_array_equal(tiled["segmentation"][inside] > 0, mask[inside])


def test_position_seeded_noise_makes_overlapping_tiles_agree():
    m, steps = model(seed=2, timesteps=100, beta_start=1e-3, beta_end=0.2), 4
    image = torch.rand(1, 3, 64, 160)
    left, right = image[..., :96], image[..., 64:]

    def overlap_gap(right_options) -> float:
        a = m.predict(left, steps=steps, origin=(0, 0)).ihc[..., 64:96]
        b = m.predict(right, steps=steps, **right_options).ihc[..., :32]
        return float((a - b).abs().mean())

    shared, independent = overlap_gap({"origin": (0, 64)}), overlap_gap({"seed": 1})
    assert shared < 0.5 * independent


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, pair):
    for name in NAMES:
        m = model(name, card={"markers": [], "pixel_size": 2.0, "tile_size": 64})
        path = save_checkpoint(m, tmp_path / f"{name}.safetensors")
        loaded = load_checkpoint(path, device="cpu")
        assert loaded.card == m.card
        first = m.predict(pair["he"], steps=3, n_samples=2).outputs()
        again = loaded.predict(pair["he"], steps=3, n_samples=2).outputs()
        assert all(torch.equal(again[k], v) for k, v in first.items())


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sampler": "dpm"}, "sampler must be one of"),
        ({"steps": 1001}, "between 1 and the model's 1000"),
        ({"n_samples": 0}, "n_samples >= 1"),
        ({"origin": (1, 2, 3)}, "origin must be"),
    ],
)
def test_bad_options_raise_model_error(options, match):
    with pytest.raises(ModelError, match=match):
        model(randomise=False).predict(torch.rand(1, 3, 32, 32), **options)


@pytest.mark.parametrize(
    "name, changes, card, match",
    [
        ("stain-diffuser", {"aux_target": "edges"}, {}, "aux_target must be one of"),
        ("stain-diffuser", {"channels": [8, 16, 32]}, {}, "channels must be 4"),
        ("stain-diffuser-multi", {"marker_weights": [1.0]}, {}, "one marker_weights entry"),
        ("stain-diffuser-multi", {}, {"markers": ["cd3"]}, "names 1 markers but n_markers is 3"),
        ("stain-diffuser", {"timesteps": 0}, {}, "timesteps must be an integer from 1"),
        ("stain-diffuser", {"parametrisation": "v"}, {}, "parametrisation must be one of"),
        ("stain-diffuser-multi", {"norm": "group"}, {}, "norm must be one of"),
        ("stain-diffuser", {"loss_weight": "snr"}, {}, "loss_weight must be one of"),
    ],
)
def test_invalid_configs_raise_model_error(name, changes, card, match):
    with pytest.raises(ModelError, match=match):
        model(name, randomise=False, card=card, **changes)


def test_inputs_must_be_multiples_of_eight():
    with pytest.raises(ModelError, match="multiples of 8"):
        model(randomise=False).predict(torch.rand(1, 3, 60, 64))


class Items(list):
    """A list dataset that records the epoch it was set to."""

    epoch = None

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_marker_dataset_tags_items_with_their_marker():
    parts = [Items([{"name": "a0"}, {"name": "a1"}]), Items([{"name": "b0"}]), [{"name": "c0"}]]
    data = MarkerDataset(parts)
    assert len(data) == 4
    assert [(data[i]["name"], data[i]["marker"]) for i in range(4)] == [
        ("a0", 0),
        ("a1", 0),
        ("b0", 1),
        ("c0", 2),
    ]
    data.set_epoch(3)
    assert parts[0].epoch == parts[1].epoch == 3
    with pytest.raises(DatasetError, match="one non-empty dataset per marker"):
        MarkerDataset([parts[0], []])
