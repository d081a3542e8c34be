"""SimpleTrainState: learning-rate schedule from progress, clipping, AMP scaling, bookkeeping."""

import pytest
import torch

from vstain.models import SimpleTrainState, TrainState


def sgd_setup(lr=1.0):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.zeros(4))
    return param, {"net": torch.optim.SGD([param], lr=lr)}


def test_lr_follows_the_schedule_and_progress_advances():
    param, opts = sgd_setup(lr=0.1)
    state = SimpleTrainState(opts, total_steps=4, lr_factor=lambda p: 1.0 - p)
    assert isinstance(state, TrainState)
    seen = []
    for _ in range(4):
        state.backward_step("net", (param * torch.ones(4)).sum())  # gradient 1 everywhere
        seen.append(opts["net"].param_groups[0]["lr"])
        state.end_step()
    assert seen == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert state.progress == 1.0
    # each SGD step moved the parameter by lr x gradient
    assert param.detach() == pytest.approx(torch.full((4,), -0.25))
    assert param.grad is None  # zeroed after stepping


def test_gradient_clipping_limits_the_update():
    param, opts = sgd_setup()
    state = SimpleTrainState(opts, total_steps=1, clip_norm=0.5)
    state.backward_step("net", (param * torch.tensor([3.0, 4.0, 0.0, 0.0])).sum())  # norm 5
    assert param.detach().norm().item() == pytest.approx(0.5)
    assert param.detach() == pytest.approx(torch.tensor([-0.3, -0.4, 0.0, 0.0]))


def test_grad_scaler_gives_the_unscaled_update():
    param, opts = sgd_setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    state = SimpleTrainState(opts, total_steps=2, clip_norm=100.0, scaler=scaler)
    state.backward_step("net", (param * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum())
    state.end_step()
    assert param.detach() == pytest.approx(torch.tensor([-1.0, -2.0, -3.0, -4.0]))


def test_unknown_optimiser_name():
    param, opts = sgd_setup()
    state = SimpleTrainState(opts, total_steps=1)
    with pytest.raises(KeyError, match=r"no optimiser 'gen'.*\['net'\]"):
        state.backward_step("gen", param.sum())
    with pytest.raises(ValueError, match="total_steps"):
        SimpleTrainState(opts, total_steps=0)
