import dask.array as da
import numpy as np
import pytest

from tests.color.conftest import angle_deg, perturbed_stains, two_stain_image
from vstain.color import HED, StainError, concentrations_to_rgb, estimate_stains
from vstain.io.slide import Slide


@pytest.mark.parametrize("seed", [3, 6, 9])
def test_macenko_recovers_perturbed_he_vectors(seed):
    truth = perturbed_stains(seed, ("hematoxylin", "eosin", "dab"))
    # The perturbation is large enough that returning the default vectors would fail.
    assert max(angle_deg(truth.vectors[i], HED.vectors[i]) for i in (0, 1)) > 5.0
    est = estimate_stains(two_stain_image(truth, seed), kind="he")
    assert est.names == ("hematoxylin", "eosin", "residual")
    assert angle_deg(est.vectors[0], truth.vectors[0]) < 3.0
    assert angle_deg(est.vectors[1], truth.vectors[1]) < 3.0
    cross = np.cross(est.vectors[0], est.vectors[1])
    np.testing.assert_allclose(np.abs(est.vectors[2]), np.abs(cross / np.linalg.norm(cross)))


def test_macenko_recovers_hematoxylin_and_dab():
    truth = perturbed_stains(4, ("hematoxylin", "eosin", "dab"))
    ihc_truth = type(truth)(truth.vectors[[0, 2, 1]], ("hematoxylin", "dab", "eosin"))
    est = estimate_stains(two_stain_image(ihc_truth, 4), kind="ihc")
    assert est.names[:2] == ("hematoxylin", "dab")
    assert angle_deg(est.vectors[0], ihc_truth.vectors[0]) < 3.0
    assert angle_deg(est.vectors[1], ihc_truth.vectors[1]) < 3.0


def test_macenko_on_a_slide_level_uses_only_the_mask():
    truth = perturbed_stains(5, ("hematoxylin", "eosin", "dab"))
    rgb = two_stain_image(truth, 5, size=128)
    rgb[:, 96:] = (20, 200, 20)  # a green pen mark, which would bend the plane if used
    mask = np.zeros(rgb.shape[:2], bool)
    mask[:, :96] = True
    slide = Slide(
        path=None, levels=[da.from_array(np.repeat(np.repeat(rgb, 2, 0), 2, 1)), da.from_array(rgb)]
    )
    est = estimate_stains(slide, mask=mask)  # coarsest level by default
    assert angle_deg(est.vectors[0], truth.vectors[0]) < 3.0
    assert angle_deg(est.vectors[1], truth.vectors[1]) < 3.0
    polluted = estimate_stains(slide)
    assert angle_deg(polluted.vectors[1], truth.vectors[1]) > 5.0


def test_macenko_on_real_ihc_is_close_to_reference_vectors(ihc_image):
    est = estimate_stains(ihc_image, kind="ihc")
    h, d = angle_deg(est.vectors[0], HED.vectors[0]), angle_deg(est.vectors[1], HED.vectors[2])
    print(f"skimage IHC: hematoxylin {h:.1f} deg, DAB {d:.1f} deg from Ruifrok's vectors")
    assert h < 10.0 and d < 10.0


def test_macenko_errors_on_glass_and_on_one_stain():
    with pytest.raises(StainError, match="too few"):
        estimate_stains(np.full((64, 64, 3), 250, np.uint8))
    one = perturbed_stains(6, ("hematoxylin", "eosin", "dab"))
    rng = np.random.default_rng(6)
    conc = np.zeros((64, 64, 3))
    conc[..., 0] = rng.uniform(0.3, 1.5, (64, 64))
    with pytest.raises(StainError, match="cannot be separated"):
        estimate_stains(concentrations_to_rgb(conc, one))


def test_macenko_rejects_unknown_kind_and_bad_mask():
    rgb = two_stain_image(perturbed_stains(7, ("hematoxylin", "eosin", "dab")), 7, size=32)
    with pytest.raises(StainError, match="Unknown slide kind"):
        estimate_stains(rgb, kind="pas")
    with pytest.raises(StainError, match="mask has shape"):
        estimate_stains(rgb, mask=np.ones((16, 16), bool))
