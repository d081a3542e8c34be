import importlib.util

import numpy as np
import pytest
import torch

from vstain.metrics import frechet_distance, kernel_inception_distance, learned
from vstain.metrics.learned import ALEXNET_WEIGHTS, FID_WEIGHTS, LearnedMetrics, Requirement


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache with no weights in it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_are_reported_not_invented(empty_hub):
    result = LearnedMetrics(torch.device("cpu")).result()
    for name, weights in (("fid", FID_WEIGHTS), ("kid", FID_WEIGHTS), ("lpips", ALEXNET_WEIGHTS)):
        assert result[name]["available"] is False
        assert result[name]["metric"] == name
        need = learned.REQUIREMENTS[name]
        if importlib.util.find_spec(need.module) is None:
            assert f"{need.pip_name} is not installed" in result[name]["reason"]
        else:
            assert (
                f"{weights} are not in the torch hub cache ({empty_hub})" in result[name]["reason"]
            )


def test_a_missing_package_is_named(monkeypatch, empty_hub):
    monkeypatch.setitem(
        learned.REQUIREMENTS, "lpips", Requirement("no_such_module_x", "no-such-pkg", "w.pth")
    )
    reason = learned.missing_requirement("lpips")["reason"]
    assert "no-such-pkg is not installed" in reason


def test_frechet_distance_of_a_shifted_copy_is_the_squared_shift():
    rng = np.random.default_rng(0)
    for n, d in ((6, 40), (80, 5)):  # fewer images than features, and more
        a = rng.normal(size=(n, d))
        shift = rng.normal(size=d)
        assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
        assert frechet_distance(a, a + shift) == pytest.approx((shift**2).sum())
        scaled = frechet_distance(a, 2 * a)  # covariance x4: trace term tr(C), mean term |mu|^2
        xa = a - a.mean(0)
        expected = (a.mean(0) ** 2).sum() + (xa**2).sum() / (n - 1)
        assert scaled == pytest.approx(expected)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = kernel_inception_distance(a, b, subsets=20, size=100)
    near = kernel_inception_distance(a, b + 0.5, subsets=20, size=100)
    far = kernel_inception_distance(a, b + 2.0, subsets=20, size=100)
    assert abs(same) < 0.05 * near  # unbiased: zero in expectation
    assert 0 < near < far


@pytest.fixture
def random_weights_hub(empty_hub):
    """The hub cache holding files of the right architectures with random weights (seed 0)."""
    pytest.importorskip("pytorch_fid")
    pytest.importorskip("lpips")
    import torchvision

    empty_hub.mkdir(parents=True)
    torch.manual_seed(0)
    inception = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=True
    )
    torch.save(inception.state_dict(), empty_hub / FID_WEIGHTS)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), empty_hub / ALEXNET_WEIGHTS)
    return empty_hub


def test_learned_metrics_run_when_weights_are_there(random_weights_hub):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 64, 64, generator=g)
    other = torch.rand(3, 3, 64, 64, generator=g)
    same = LearnedMetrics(torch.device("cpu"))
    same.add(real, real)
    result = same.result()
    assert result["lpips"] == pytest.approx(0, abs=1e-6)
    assert result["fid"] == pytest.approx(0, abs=1e-3)
    differ = LearnedMetrics(torch.device("cpu"))
    differ.add(other, real)
    result = differ.result()
    assert result["lpips"] > 0.01 and result["fid"] > 1e-3
