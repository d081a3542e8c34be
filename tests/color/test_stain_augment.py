import numpy as np

from vstain.color import HED, concentrations_to_rgb, rgb_to_concentrations
from vstain.color.stain_augment import perturb_stains, random_he_perturbation


def he_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    conc = np.zeros((32, 32, 3))
    conc[..., :2] = rng.uniform(0.05, 0.6, (32, 32, 2))  # light enough for uint8 precision
    return concentrations_to_rgb(conc, HED)


def test_identity_perturbation_keeps_the_image():
    rgb = he_image()
    out = perturb_stains(rgb, np.ones(3), np.zeros(3))
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 1


def test_scale_and_shift_act_on_each_stain():
    rgb = he_image()
    before = rgb_to_concentrations(rgb)
    after = rgb_to_concentrations(perturb_stains(rgb, np.array([1.2, 1.0, 1.0]), [0, 0.05, 0]))
    np.testing.assert_allclose(after[..., 0], 1.2 * before[..., 0], atol=0.02)
    np.testing.assert_allclose(after[..., 1], before[..., 1] + 0.05, atol=0.02)
    np.testing.assert_allclose(after[..., 2], before[..., 2], atol=0.02)


def test_random_he_perturbation_ranges_and_leaves_dab():
    rng = np.random.default_rng(0)
    draws = [random_he_perturbation(rng, 0.1, 0.03) for _ in range(200)]
    scales = np.array([s for s, _ in draws])
    shifts = np.array([t for _, t in draws])
    assert np.all(np.abs(scales[:, :2] - 1) <= 0.1) and np.all(np.abs(shifts[:, :2]) <= 0.03)
    assert np.all(scales[:, 2] == 1) and np.all(shifts[:, 2] == 0)
    assert scales[:, :2].std() > 0.03  # really random
