"""ASP-DGRank: attention sampling, adaptive weights and T, losses, outputs, checkpoints, import."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import nn

from tests.models.cut_reference import RefResnetGenerator, randomise
from tests.models.test_models import RecordingState
from vstain.models import (
    ModelError,
    create,
    import_generator,
    load_checkpoint,
    model_configs,
    save_checkpoint,
)
from vstain.models.asp_dgrank import (
    a2sp_loss,
    a2sp_pairs,
    asp_weights,
    attention_map,
    sample_locations,
)
from vstain.models.base import linear_decay
from vstain.models.blocks.adaptive_diffusion import AdaptiveDiffusion
from vstain.models.blocks.time_patchgan import TimePatchGAN
from vstain.models.losses import PatchSampleMLP
from vstain.tiles import CancelToken
from vstain.train.trainer import train

NAME = "asp-dgrank"


def small(**changes):
    torch.manual_seed(0)
    return create(NAME, {**model_configs(NAME)["small"], **changes})


def lively(model):
    """Kaiming x 0.8 conv weights, so the small generator's output varies across the image."""
    torch.manual_seed(1)
    for m in model.generator.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data *= 0.8
    return model.eval()


def test_paper_config_is_the_papers():
    cfg = model_configs(NAME)["paper"]
    assert (cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["antialias"]) == (64, 6, "instance", True)
    assert cfg["nce_layers"] == [0, 4, 8, 12, 16]
    assert (cfg["num_patches"], cfg["tau"]) == (256, 0.07)
    lambdas = [cfg[f"lambda_{k}"] for k in ("gan", "nce", "a2sp", "gp")]
    assert lambdas == [1.0, 10.0, 10.0, 10.0]
    assert (cfg["beta_start"], cfg["beta_end"], cfg["noise_std"]) == (1e-4, 2e-2, 0.05)
    assert (cfg["t_min"], cfg["t_max"]) == (10, 1000)
    assert (cfg["lr"], cfg["beta1"], cfg["beta2"]) == (2e-4, 0.5, 0.999)
    model = create(NAME, "paper")
    ref = RefResnetGenerator(ngf=64, n_blocks=6, norm="instance")
    count = sum(p.numel() for p in model.generator.parameters())
    assert count == sum(p.numel() for p in ref.parameters())  # CUT's resnet_6blocks


def test_lr_and_asp_schedule():
    model = create(NAME)
    k = 40 / 45
    factors = [model.lr_factor(p) for p in (0.0, k, (1 + k) / 2, 1.0)]
    np.testing.assert_allclose(factors, [1.0, 1.0, 0.5, 0.0], atol=1e-12)
    assert linear_decay(0.75, 0.5) == 0.5


def test_multinomial_sampling_follows_the_attention_map():
    torch.manual_seed(0)
    norms = torch.arange(1.0, 17.0)  # 4 x 4 map, attention of location i is i + 1
    direction = torch.nn.functional.normalize(torch.randn(3, 16), dim=0)
    feature = (direction * norms).view(1, 3, 4, 4)
    torch.testing.assert_close(attention_map(feature).flatten(), norms)
    draws = sample_locations(feature.expand(20000, -1, -1, -1), 1).flatten()
    counts = torch.bincount(draws, minlength=16).numpy()
    expected = (norms / norms.sum()).numpy() * draws.numel()
    assert chisquare(counts, expected).pvalue > 1e-3
    uniform = sample_locations(feature.expand(20000, -1, -1, -1), 1, "uniform").flatten()
    assert chisquare(torch.bincount(uniform, minlength=16).numpy(), expected).pvalue < 1e-6


def test_sampling_gives_distinct_locations_even_where_attention_is_zero():
    feature = torch.zeros(2, 4, 8, 8)
    feature[:, :, 0, :3] = 1.0  # only 3 non-zero locations, 10 asked for
    ids = sample_locations(feature, 10)
    assert ids.shape == (2, 10)
    assert all(len(set(row.tolist())) == 10 for row in ids)
    assert all(set(row[:3].tolist()) == {0, 1, 2} for row in ids)  # the attended ones come first


@pytest.mark.parametrize("sampling", ["attention", "uniform"])
def test_real_and_fake_patches_come_from_the_same_locations(sampling):
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)]
    sampler = PatchSampleMLP([8, 16], nc=32)
    fake, real = a2sp_pairs(sampler, [f.clone() for f in feats], feats, 32, sampling)
    for q, k in zip(fake, real, strict=True):
        assert q.shape == (64, 32)
        torch.testing.assert_close(q, k)  # equal features at equal locations give equal patches
    other, _ = a2sp_pairs(sampler, [torch.randn_like(f) for f in feats], feats, 32, sampling)
    assert not torch.allclose(other[0], real[0])


def test_adaptive_weights_normalise_to_mean_one():
    similarity = torch.tensor([[0.9, 0.5, -0.3, 0.1], [0.2, 0.2, 0.2, 0.2]])
    for schedule in (1.0, 0.6, 0.0):
        w = asp_weights(similarity, schedule)
        torch.testing.assert_close(w.mean(dim=1), torch.ones(2))
    torch.testing.assert_close(asp_weights(similarity, 1.0), torch.ones(2, 4))
    late = asp_weights(similarity, 0.0)[0]  # relu(similarity), renormalised
    torch.testing.assert_close(late, torch.tensor([0.9, 0.5, 0.0, 0.1]) / 1.5 * 4)


def test_a2sp_weights_well_matched_patches_more_late_in_training():
    torch.manual_seed(0)
    real = [torch.randn(1, 8, 16, 16)]
    fake = [real[0] + 0.5 * torch.randn_like(real[0])]
    sampler = PatchSampleMLP([8], nc=16)
    torch.manual_seed(1)
    early = a2sp_loss(sampler, fake, real, 1.0, num_patches=64)
    torch.manual_seed(1)
    late = a2sp_loss(sampler, fake, real, 0.0, num_patches=64)
    assert early.isfinite() and late.isfinite() and not torch.isclose(early, late)


def test_diffusion_schedule_and_step_distribution():
    diff = AdaptiveDiffusion(t_min=100, t_max=1000)
    betas = np.linspace(1e-4, 2e-2, 100)
    np.testing.assert_allclose(diff.alphas_bar().numpy()[1:], np.cumprod(1 - betas), rtol=1e-6)
    torch.manual_seed(0)
    t = diff.sample_t(50000)
    assert t.min() >= 1 and t.max() <= 100
    assert abs(t.float().mean().item() - 201 / 3) < 0.5  # E[t] for P(t) ~ t on 1..100
    x_t, t = diff(torch.zeros(4000, 1, 2, 2))
    abar = diff.alphas_bar()[t]
    scaled = x_t.flatten(1) / (1 - abar).sqrt()[:, None]
    assert abs(scaled.std().item() - 0.05) < 0.002  # sigma = 0.05 scales the noise


def test_T_rises_when_D_overfits_and_falls_when_it_does_not():
    diff = AdaptiveDiffusion(t_min=10, t_max=1000, interval=4, kimg=0.1)
    overfit = torch.ones(5, 1, 4, 4)  # LSGAN D sure that real is real: sign(D - 0.5) = 1
    history = []
    for _ in range(40):
        diff.observe(overfit)
        history.append(diff.steps)
    assert history[2] == 10 and history[3] == 10 + round(20 / 100 * 990)  # p += 5 * 4 / 100
    assert history == sorted(history) and history[-1] == 1000
    unsure = torch.full((5, 1, 4, 4), 0.45)  # sign(D - 0.5) = -1 < target 0.6
    for _ in range(12):
        diff.observe(unsure)
    assert diff.steps == 1000 - round(0.6 * 990)
    for _ in range(40):
        diff.observe(unsure)
    assert diff.steps == 10


def test_discriminator_is_conditioned_on_t():
    torch.manual_seed(0)
    d = TimePatchGAN(3, 8, 3, "instance", 16)
    x = torch.randn(2, 3, 64, 64)
    out = d(x, torch.tensor([5, 5]))
    assert out.shape == (2, 1, 6, 6)
    assert not torch.allclose(out, d(x, torch.tensor([500, 500])))


def test_training_updates_d_then_g_and_every_term_reaches_the_generator(pair):
    model = small().train()
    state = RecordingState(model.configure_optimizers())
    losses = model.training_step(pair, state)
    assert state.order == ["discriminator", "generator"]
    assert set(losses) == {"d", "g_gan", "g_nce", "g_a2sp", "g_gp", "diffusion_T"}
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())
    for part, opt_name in ((model.generator, "generator"), (model.sampler, "generator")):
        for name, p in part.named_parameters():
            grad = state.grads[opt_name][id(p)]
            assert grad is not None and grad.abs().sum() > 0, name
    for name, p in model.discriminator.named_parameters():
        grad = state.grads["discriminator"][id(p)]
        assert grad is not None and grad.abs().sum() > 0, name
    he, ihc = pair["he"] * 2 - 1, pair["ihc"] * 2 - 1
    fake, feats_he = model.generator(he, model.layers)
    terms = model.generator_terms(ihc, fake, feats_he, progress=0.95)
    for name, term in terms.items():
        model.zero_grad()
        term.backward(retain_graph=True)
        grads = [p.grad for p in model.generator.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def generator_grads(model, batch):
    torch.manual_seed(3)
    model.zero_grad()
    he, ihc = batch["he"] * 2 - 1, batch["ihc"] * 2 - 1
    fake, feats_he = model.generator(he, model.layers)
    sum(model.generator_terms(ihc, fake, feats_he, 0.5).values()).backward()
    return torch.cat([p.grad.flatten() for p in model.generator.parameters()])


@pytest.mark.parametrize("setting", ["paired", "unpaired"])
def test_unpaired_switches_off_the_pair_terms(pair, setting):
    model = small(setting=setting, lambda_gan=0.0).train()
    expected = ["g_nce", "g_a2sp", "g_gp"] if setting == "paired" else ["g_nce"]
    assert model.active_terms() == expected
    other = {"he": pair["he"], "ihc": torch.rand_like(pair["ihc"])}
    same = torch.equal(generator_grads(model, pair), generator_grads(model, other))
    assert same == (setting == "unpaired")  # only the pair terms read the real IHC
    full = small(setting=setting).train()
    losses = full.training_step(pair, RecordingState(full.configure_optimizers()))
    assert ("g_a2sp" in losses) == ("g_gp" in losses) == (setting == "paired")


@pytest.mark.parametrize(
    ("config", "diffusion", "a2sp"),
    [
        ("small", True, True),
        ("small-baseline", False, False),
        ("small-dm", True, False),
        ("small-am", False, True),
    ],
)
def test_table5_ablation_configs(config, diffusion, a2sp):
    model = create(NAME, config)
    assert (model.diffusion is not None) == diffusion
    assert ("g_a2sp" in model.active_terms()) == a2sp
    rest = {k: v for k, v in model.config.items() if k not in ("diffusion", "lambda_a2sp")}
    assert rest == {k: v for k, v in model_configs(NAME)["small"].items() if k in rest}


def test_ablation_without_diffusion_feeds_clean_images_at_t0(pair):
    model = small(diffusion=False, lambda_a2sp=0.0).train()
    assert model.diffusion is None and model.active_terms() == ["g_gan", "g_nce", "g_gp"]
    x, t = model.diffuse(pair["ihc"])
    assert x is pair["ihc"] and t.tolist() == [0]
    losses = model.training_step(pair, RecordingState(model.configure_optimizers()))
    assert "diffusion_T" not in losses and "g_a2sp" not in losses


def test_adaptive_T_survives_checkpoint_and_resume(tmp_path, pair):
    model = small().train()
    for _ in range(8):
        model.diffusion.observe(torch.ones(4, 1, 6, 6))
    assert model.diffusion.steps > 10
    model.diffusion.observe(torch.ones(4, 1, 6, 6))  # half-way through an interval
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    for key in ("p", "T", "sign_sum", "observed", "images"):
        assert torch.equal(getattr(loaded.diffusion, key), getattr(model.diffusion, key)), key
    torch.testing.assert_close(loaded.predict(pair["he"]).ihc, model.predict(pair["he"]).ihc)


def test_resumed_training_continues_the_adaptive_T(tmp_path, pair):
    data = [{"he": pair["he"][0].roll(i, -1), "ihc": pair["ihc"][0].roll(i, -1)} for i in range(4)]
    options = {"steps": 6, "batch_size": 2, "device": "cpu", "seed": 0}
    fast = {"ada_interval": 1, "ada_kimg": 0.02, "ada_target": -1.0}  # p += 0.1 every step

    def run(path, **extra):
        model = small(**fast)
        train(model, data, checkpoint_path=path, **options, **extra)
        return model

    full = run(tmp_path / "full.safetensors")
    token = CancelToken()

    class StopAtThree:
        def on_step(self, step, losses, seconds):
            if step == 3:
                token.cancel()

    run(tmp_path / "half.safetensors", callbacks=[StopAtThree()], cancel=token)
    assert load_checkpoint(tmp_path / "half.safetensors").diffusion.steps == 10 + 297
    resumed = run(tmp_path / "half.safetensors", resume=True)
    assert full.diffusion.steps == resumed.diffusion.steps == 10 + 594
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, pair):
    model = small().train()
    model.training_step(pair, RecordingState(model.configure_optimizers()))
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.card.config == model.card.config
    for a, b in ((model, loaded), (loaded, model)):
        assert torch.equal(a.predict(pair["he"]).ihc, b.predict(pair["he"]).ihc)
    state, other = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], other[k]) for k in state)


def test_tiled_output_equals_whole_image_away_from_the_border():
    model = lively(small())
    halo, tile, y0, x0 = model.receptive_halo(), 32, 112, 96
    assert halo % 4 == 0
    image = torch.rand(1, 3, 2 * halo + 224, 2 * halo + 224)
    whole = model.predict(image).ihc[..., y0 : y0 + tile, x0 : x0 + tile]
    window = image[..., y0 - halo : y0 + tile + halo, x0 - halo : x0 + tile + halo]
    tiled = model.predict(window).ihc[..., halo:-halo, halo:-halo]
    assert whole.std() > 0.02
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


def test_imported_cut_generator_loads_into_asp_dgrank(tmp_path, pair):
    ref = randomise(RefResnetGenerator(ngf=8, n_blocks=6, norm="instance"), seed=0).eval()
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), path)
    model = import_generator(path, architecture=NAME, markers=["HER2"])
    assert model.card.architecture == NAME and model.card.config["n_blocks"] == 6
    assert model.card.config["nce_layers"] == [0, 4, 8, 12, 16]
    x = pair["he"]
    with torch.no_grad():
        expected = ref(x * 2 - 1)
    assert (expected.abs() < 0.99).float().mean() > 0.5
    torch.testing.assert_close(model.predict(x).ihc, (expected + 1) / 2, rtol=0, atol=1e-6)


def test_predict_outputs_uncertainty_and_attention(pair):
    model = lively(small())
    plain = model.predict(pair["he"])
    assert plain.uncertainty is None and plain.attention is None
    out = model.predict(pair["he"], tta=8, reference=pair["ihc"])
    assert out.ihc.shape == (1, 3, 64, 64) and out.ihc.min() >= 0 and out.ihc.max() <= 1
    assert out.uncertainty.shape == (1, 1, 64, 64) and out.uncertainty.min() >= 0
    assert out.uncertainty.mean() > 0
    assert out.attention.shape == (1, 5, 64, 64)
    torch.testing.assert_close(out.attention.flatten(2).amax(2), torch.ones(1, 5))
    layer0 = (pair["ihc"] * 2 - 1).norm(dim=1)
    torch.testing.assert_close(out.attention[:, 0], layer0 / layer0.max())


def test_errors_say_what_to_do(pair):
    model = small()
    with pytest.raises(ModelError, match=r"tta must be 1 \.\. 8"):
        model.predict(pair["he"], tta=9)
    with pytest.raises(ModelError, match="register and crop it"):
        model.predict(pair["he"], reference=pair["ihc"][..., :32, :32])
    with pytest.raises(ModelError, match="at least 64 px"):
        model.training_step(
            {"he": torch.rand(1, 3, 32, 32), "ihc": torch.rand(1, 3, 32, 32)},
            RecordingState(model.configure_optimizers()),
        )
    with pytest.raises(ModelError, match="setting must be one of"):
        small(setting="weakly")
