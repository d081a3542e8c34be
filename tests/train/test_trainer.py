import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vstain.errors import CheckpointError
from vstain.models import create, load_checkpoint, read_card
from vstain.models.pix2pix import Pix2Pix
from vstain.tiles import CancelToken
from vstain.train.resume_state import RunState, load_state, save_state
from vstain.train.step_copies import StepCopies, step_copy_path
from vstain.train.trainer import StepBatches, TrainingError, train


def tiny_config() -> dict:
    return {**create("pix2pix", "small").config, "ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2}


def tiny_model(cls=Pix2Pix):
    torch.manual_seed(0)
    return cls(create("pix2pix", tiny_config()).card)


class Pairs(torch.utils.data.Dataset):
    """``n`` 32 px pairs: the IHC is a fixed colour transform of the H&E. Records epochs set."""

    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(1)
        self.he = torch.rand(n, 3, 32, 32, generator=g)
        self.epochs = set()

    def set_epoch(self, epoch):
        self.epochs.add(epoch)

    def __len__(self):
        return len(self.he)

    def __getitem__(self, i):
        he = self.he[i]
        return {"he": he, "ihc": he.flip(0) * 0.8 + 0.1}


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


class Recorder:
    def __init__(self):
        self.steps, self.validations, self.checkpoints = [], [], []

    def on_step(self, step, losses, seconds):
        assert seconds > 0 and set(losses) == {"d", "g_gan", "g_rec"}
        self.steps.append(step)

    def on_validation(self, step, metrics):
        self.validations.append((step, metrics))

    def on_checkpoint(self, path):
        self.checkpoints.append((read_card(path).steps, weights(load_checkpoint(path))))


def test_loss_decreases_on_one_pair_and_callbacks_fire(tmp_path):
    ckpt, recorder = tmp_path / "m.safetensors", Recorder()
    result = train(
        tiny_model(),
        Pairs(n=1),
        steps=30,
        batch_size=1,
        val_data=Pairs(n=2),
        val_every=20,
        checkpoint_path=ckpt,
        checkpoint_every=20,
        device="cpu",
        training_data="one test pair",
        callbacks=[recorder, object(), StepCopies()],  # a callback may implement nothing
    )
    rec = [r["g_rec"] for r in result.losses]
    assert np.mean(rec[-5:]) < 0.8 * np.mean(rec[:5])
    assert recorder.steps == list(range(1, 31))
    assert [s for s, _ in recorder.validations] == [20, 30]  # every 20 steps and at the end
    assert {"psnr", "ssim", "object_f1"} <= set(recorder.validations[-1][1])
    assert [s for s, _ in recorder.checkpoints] == [20, 30]
    for step, saved in recorder.checkpoints:  # StepCopies kept each step's weights and card
        copy = load_checkpoint(step_copy_path(ckpt, step))
        assert copy.card.steps == step
        assert_same(saved, weights(copy))
    card = read_card(ckpt)
    assert card.steps == 30 and card.training_data == "one test pair"
    assert card.metrics["validation_step"] == 30
    assert card.metrics["psnr"] == recorder.validations[-1][1]["psnr"]
    assert result.checkpoint == ckpt and not result.cancelled


def test_resumed_run_equals_uninterrupted_run_with_ema(tmp_path):
    options = {"steps": 6, "batch_size": 3, "device": "cpu", "seed": 3, "ema": 0.8}
    full_ckpt = tmp_path / "full.safetensors"
    full = tiny_model()
    train(full, Pairs(), checkpoint_path=full_ckpt, **options)

    ckpt, token, recorder = tmp_path / "half.safetensors", CancelToken(), Recorder()

    class StopAtThree:
        def on_step(self, step, losses, seconds):
            if step == 3:
                token.cancel()

    result = train(
        tiny_model(),
        Pairs(),
        checkpoint_path=ckpt,
        callbacks=[StopAtThree(), recorder],
        cancel=token,
        **options,
    )
    assert result.cancelled and result.steps == 3 and result.checkpoint == ckpt
    assert [s for s, _ in recorder.checkpoints] == [3]  # cancel saved a checkpoint
    assert read_card(ckpt).steps == 3

    data = Pairs()
    resumed = tiny_model()
    result = train(resumed, data, checkpoint_path=ckpt, resume=True, **options)
    assert result.steps == 6 and len(result.losses) == 3
    assert data.epochs == {1, 2}  # 8 items, batches of 3: steps 3-5 read positions 9-17
    assert_same(weights(full), weights(resumed))  # raw weights
    assert_same(load_file(full_ckpt), load_file(ckpt))  # EMA weights, as saved
    raw = load_file(tmp_path / "half.state.safetensors")
    assert not torch.equal(
        raw["model/generator.model.1.weight"], load_file(ckpt)["generator.model.1.weight"]
    )


def test_data_loader_workers_give_the_same_run_and_leave_the_random_state_alone():
    a, b = tiny_model(), tiny_model()
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    train(a, Pairs(), steps=2, batch_size=2, device="cpu")
    assert torch.equal(torch.rand(3), before)
    train(b, Pairs(), steps=2, batch_size=2, device="cpu", num_workers=1)
    assert_same(weights(a), weights(b))


class PoisonedLoss(Pix2Pix):
    """Its reconstruction loss becomes NaN from step 3 on."""

    def training_step(self, batch, state):
        self.poisoned = state.step + 1 >= 3
        return super().training_step(batch, state)

    def reconstruction_loss(self, fake, real):
        loss = super().reconstruction_loss(fake, real)
        return loss * float("nan") if self.poisoned else loss


class PoisonedWeights(Pix2Pix):
    """A weight becomes infinite during step 2, while every loss stays finite."""

    def training_step(self, batch, state):
        losses = super().training_step(batch, state)
        if state.step + 1 == 2:
            with torch.no_grad():
                next(self.generator.parameters()).fill_(float("inf"))
        return losses


@pytest.mark.parametrize(
    ("cls", "last_good", "message"),
    [(PoisonedLoss, 2, r"generator loss became nan at step 3"), (PoisonedWeights, 1, "not finite")],
)
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, cls, last_good, message
):
    ckpt, recorder = tmp_path / "m.safetensors", Recorder()
    with pytest.raises(TrainingError, match=message):
        train(
            tiny_model(cls),
            Pairs(),
            steps=5,
            batch_size=2,
            device="cpu",
            checkpoint_path=ckpt,
            checkpoint_every=1,
            callbacks=[recorder],
        )
    assert [s for s, _ in recorder.checkpoints] == list(range(1, last_good + 1))
    assert read_card(ckpt).steps == last_good
    saved = weights(load_checkpoint(ckpt))
    assert all(v.isfinite().all() for v in saved.values() if v.is_floating_point())
    assert_same(recorder.checkpoints[-1][1], saved)


def test_resume_refuses_what_would_not_continue_the_run(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    train(tiny_model(), Pairs(), steps=1, batch_size=2, device="cpu", checkpoint_path=ckpt)
    options = {"steps": 2, "batch_size": 2, "device": "cpu", "checkpoint_path": ckpt}
    with pytest.raises(CheckpointError, match="resume with seed=0"):
        train(tiny_model(), Pairs(), resume=True, seed=1, **options)
    with pytest.raises(CheckpointError, match="trained with ema=None"):
        train(tiny_model(), Pairs(), resume=True, ema=0.9, **options)
    (tmp_path / "m.state.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"training state m\.state\.safetensors is missing"):
        train(tiny_model(), Pairs(), resume=True, **options)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny_model(), Pairs(), resume=True, **{**options, "checkpoint_path": tmp_path / "x"})


def test_step_batches_are_epochs_of_permutations_from_seed_and_step():
    sampler = StepBatches(n=5, batch_size=2, seed=7, start=0, stop=5)
    batches = list(sampler)
    flat = [key for batch in batches for key in batch]
    assert [e for e, _ in flat] == [0] * 5 + [1] * 5
    assert (
        sorted(i for e, i in flat if e == 0)
        == sorted(i for e, i in flat if e == 1)
        == list(range(5))
    )
    assert (
        list(StepBatches(5, 2, 7, start=3, stop=5)) == batches[3:]
    )  # nothing depends on iteration
    assert list(StepBatches(5, 2, 8, 0, 5)) != batches


def test_training_state_round_trips_the_scaler_and_optimisers(tmp_path):
    model = tiny_model()
    optimizers = model.configure_optimizers()
    batch = Pairs()[0]
    loss = model.generator(batch["he"][None]).mean()
    loss.backward()
    optimizers["generator"].step()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    run = RunState(step=4, seed=2, scaler=scaler.state_dict(), ema_decay=0.5, ema_updates=4)
    ckpt = tmp_path / "m.safetensors"
    save_state(ckpt, run, optimizers, {"w": torch.ones(2)})
    fresh = tiny_model().configure_optimizers()
    loaded, raw = load_state(ckpt, fresh)
    assert loaded == run and torch.equal(raw["w"], torch.ones(2))
    saved, restored = optimizers["generator"].state_dict(), fresh["generator"].state_dict()
    for pid, entries in saved["state"].items():
        for key, value in entries.items():
            assert torch.equal(restored["state"][pid][key], value)
