"""Every registered model: overfits one pair, trains all generator weights, predicts safely.

Adding a model to the registry adds it to the parametrised tests here; give it an overfit recipe
in ``RECIPES`` (config changes, steps, predict options).
"""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from vstain.models import (
    ModelError,
    SimpleTrainState,
    TrainState,
    create,
    list_models,
    model_configs,
)
from vstain.models.losses import gaussian_pyramid_l1


@dataclass(frozen=True)
class Recipe:
    """How to overfit a model's ``small`` config on one 64 x 64 pair within ~60 s on a CPU."""

    config: dict
    steps: int
    predict_options: dict = field(default_factory=dict)


RECIPES = {
    "pix2pix": Recipe({"lr": 5e-4}, steps=300),
    "pyramid-pix2pix": Recipe({"lr": 5e-4}, steps=500),
    "pix2pix-unet": Recipe({"lr": 5e-4}, steps=300),
    "pyramid-pix2pix-unet": Recipe({"lr": 5e-4}, steps=500),
    "asp-dgrank": Recipe({"lr": 5e-4}, steps=300),
    "implicit-stainer": Recipe({"lr": 2e-3, "perceptual_backbone": None}, steps=120),
    # aligned pair: identity prior; Eq. 17 from the first step (the pretraining has its own test)
    "k-stain": Recipe({"lr": 1e-3, "ridge": 10.0, "hskd_pretrain_steps": 0}, steps=150),
    # Diffusion: T = 10 linear betas 0.05 .. 0.9 (abar_T = 2e-4, so x_T is pure noise) and 5
    # deterministic DDIM steps from position-seeded noise (t = 9, 7, 5, 3, 1): the whole sampler
    # runs, and the last x0 estimate (abar_1 = 0.81) must be within ~0.06 RMS for 30 dB. Four
    # noise draws per step and a decaying rate tame the variance of the one-pair loss.
    # One multi-stain branch: the pair has no "marker".
    **{
        name: Recipe(
            {
                "timesteps": 10,
                "beta_start": 0.05,
                "beta_end": 0.9,
                "lr": 1e-3,
                "noise_draws": 4,
                "lr_decay_start": 0.5,
                **extra,
            },
            steps=steps,
            predict_options={"steps": 5},
        )
        for name, extra, steps in [
            ("stain-diffuser", {}, 400),
            # half of each batch trains the other direction: 30.5 dB at 400 steps, too close
            ("stain-diffuser-bidirectional", {}, 600),
            ("stain-diffuser-multi", {"n_markers": 1, "marker_weights": [1.0]}, 400),
        ]
    },
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * np.log10(1.0 / ((a - b) ** 2).mean().item()))


@pytest.fixture
def one_thread():
    """One intra-op thread: the one-pair diffusion runs are chaotic, and the float order of another
    thread count gives another trajectory (the recipes' margins were measured on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list_models())
def test_overfits_one_pair(name, pair, one_thread):
    if name not in RECIPES:
        pytest.fail(f"add an overfit recipe for {name!r} to RECIPES")
    recipe = RECIPES[name]
    torch.manual_seed(0)
    model = create(name, {**model_configs(name)["small"], **recipe.config}).train()
    state = SimpleTrainState.for_model(model, recipe.steps)
    before = psnr(model.predict(pair["he"], **recipe.predict_options).ihc, pair["ihc"])
    for _ in range(recipe.steps):
        losses = model.training_step(pair, state)
        state.end_step()
    assert all(np.isfinite(v) for v in losses.values())
    after = psnr(model.predict(pair["he"], **recipe.predict_options).ihc, pair["ihc"])
    assert after > 30 and after > before + 10


class RecordingState:
    """A TrainState that records the update order and the gradients each update saw."""

    progress = 0.0
    step = 0

    def __init__(self, optimizers):
        self.optimizers = optimizers
        self.order, self.grads = [], {}

    def backward_step(self, name, loss):
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.order.append(name)
        self.grads[name] = {
            id(p): p.grad for g in self.optimizers[name].param_groups for p in g["params"]
        }
        self.optimizers[name].step()


@pytest.mark.parametrize(
    "name", ["pix2pix", "pyramid-pix2pix", "pix2pix-unet", "pyramid-pix2pix-unet"]
)
def test_gan_baselines_update_d_then_g_and_reach_every_weight(name, pair):
    torch.manual_seed(0)
    model = create(name).train()
    state = RecordingState(model.configure_optimizers())
    assert isinstance(state, TrainState)
    losses = model.training_step(pair, state)
    assert state.order == ["discriminator", "generator"]
    assert set(losses) == {"d", "g_gan", "g_rec"}
    for part, opt_name in ((model.generator, "generator"), (model.discriminator, "discriminator")):
        for pname, p in part.named_parameters():
            grad = state.grads[opt_name][id(p)]
            assert grad is not None and grad.abs().sum() > 0, f"{opt_name}: {pname}"
    # the generator step left no gradient in the discriminator (it was frozen)
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_pix2pix_lr_schedule():
    model = create("pix2pix")
    assert [model.lr_factor(p) for p in (0.0, 0.5, 0.75, 1.0)] == [1.0, 1.0, 0.5, 0.0]


def test_pyramid_form_selects_the_pyramid_and_old_cards_keep_pyramidpix2pixs():
    """``pyramid_form="asp"`` with ASP-DGRank's weights gives its pyramid L1 (the weighting
    control); a config written before the key existed gets PyramidPix2Pix's pyramid."""
    torch.manual_seed(0)
    fake, real = torch.rand(2, 1, 3, 64, 64) * 2 - 1
    asp_weights = [10 / 6] * 6
    cfg = model_configs("pyramid-pix2pix")["small"] | {"pyramid_weights": asp_weights}
    asp = create("pyramid-pix2pix", cfg | {"pyramid_form": "asp"})
    loss = asp.reconstruction_loss(fake, real)
    assert loss == gaussian_pyramid_l1(fake, real, asp_weights, "asp")
    assert loss != gaussian_pyramid_l1(fake, real, asp_weights)
    for name in ("pyramid-pix2pix", "pyramid-pix2pix-unet"):
        old = model_configs(name)["small"]
        del old["pyramid_form"]
        assert create(name, old).config["pyramid_form"] == "pyramidpix2pix"
    with pytest.raises(ModelError, match="pyramid_form must be one of"):
        create("pyramid-pix2pix", cfg | {"pyramid_form": "laplacian"})


def test_predict_restores_training_mode_and_needs_no_grad(pair):
    model = create("pix2pix").train()
    out = model.predict(pair["he"])
    assert model.training
    assert out.ihc.shape == (1, 3, 64, 64) and not out.ihc.requires_grad
    assert out.ihc.min() >= 0 and out.ihc.max() <= 1


def test_predict_rejects_bad_input_and_options(pair):
    model = create("pix2pix")
    with pytest.raises(ModelError, match="B x 3 x H x W"):
        model.predict(torch.rand(3, 64, 64))
    with pytest.raises(ModelError, match="float input"):
        model.predict((pair["he"] * 255).to(torch.uint8))
    with pytest.raises(ModelError, match="multiples of 4, got 62 x 64"):
        model.predict(torch.rand(1, 3, 62, 64))
    with pytest.raises(ModelError, match=r"does not take the options \['steps'\]"):
        model.predict(pair["he"], steps=10)
