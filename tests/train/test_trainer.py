import numpy as np
import pytest
import torch

from vstain.errors import CheckpointError
from vstain.models import create, load_checkpoint
from vstain.tiles import CancelToken
from vstain.train.trainer import TrainingError, train


def tiny_model():
    torch.manual_seed(0)
    config = {**create("pix2pix", "small").config, "ngf": 8, "ndf": 8, "n_blocks": 1}
    return create("pix2pix", config)


class Pairs(torch.utils.data.Dataset):
    """Eight 32 px pairs: IHC is a fixed colour transform of the H&E."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.he = torch.rand(8, 3, 32, 32, generator=g)

    def __len__(self):
        return len(self.he)

    def __getitem__(self, i):
        he = self.he[i]
        return {"he": he, "ihc": he.flip(0) * 0.8 + 0.1}


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases_and_callbacks_fire(tmp_path):
    seen = {"step": 0, "val": 0, "ckpt": 0}

    class Recorder:
        def on_step(self, step, losses, seconds):
            seen["step"] += 1

        def on_validation(self, step, metrics):
            seen["val"] += 1
            assert metrics["psnr"] > 0

        def on_checkpoint(self, path):
            seen["ckpt"] += 1

    ckpt = tmp_path / "m.safetensors"
    result = train(
        tiny_model(),
        Pairs(),
        steps=40,
        batch_size=4,
        val_data=Pairs(),
        val_every=20,
        checkpoint_path=ckpt,
        checkpoint_every=20,
        device="cpu",
        callbacks=[Recorder()],
    )
    rec = [r["g_rec"] for r in result.losses]
    assert np.mean(rec[-5:]) < 0.9 * np.mean(rec[:5])
    assert seen == {"step": 40, "val": 2, "ckpt": 3}
    assert load_checkpoint(ckpt).card.steps == 40


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full = tiny_model()
    train(full, Pairs(), steps=6, batch_size=2, device="cpu", seed=3)
    ckpt = tmp_path / "half.safetensors"
    first = tiny_model()
    token = CancelToken()

    class StopAtThree:
        def on_step(self, step, losses, seconds):
            if step == 3:
                token.cancel()

    result = train(
        first,
        Pairs(),
        steps=6,
        batch_size=2,
        device="cpu",
        seed=3,
        checkpoint_path=ckpt,
        callbacks=[StopAtThree()],
        cancel=token,
    )
    assert result.cancelled and result.steps == 3
    resumed = tiny_model()
    train(
        resumed,
        Pairs(),
        steps=6,
        batch_size=2,
        device="cpu",
        seed=3,
        checkpoint_path=ckpt,
        resume=True,
    )
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


class Exploding(Pairs):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        return {**item, "he": item["he"] * float("nan")}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    model = tiny_model()
    train(model, Pairs(), steps=2, batch_size=2, device="cpu", checkpoint_path=ckpt)
    good = weights(load_checkpoint(ckpt))
    with pytest.raises(TrainingError, match=r"nan|NaN"):
        train(
            model,
            Exploding(),
            steps=4,
            batch_size=2,
            device="cpu",
            checkpoint_path=ckpt,
            checkpoint_every=1,
        )
    for k, v in weights(load_checkpoint(ckpt)).items():
        assert torch.equal(v, good[k])


def test_resume_without_state_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    train(tiny_model(), Pairs(), steps=1, batch_size=2, device="cpu", checkpoint_path=ckpt)
    (tmp_path / "m.state.safetensors").unlink()
    with pytest.raises(CheckpointError, match="training state"):
        train(
            tiny_model(),
            Pairs(),
            steps=2,
            batch_size=2,
            device="cpu",
            checkpoint_path=ckpt,
            resume=True,
        )
