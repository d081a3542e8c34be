import numpy as np
import pytest

from vstain.color import HED, StainError, StainMatrix, concentrations_to_rgb, dab_od


def test_dab_od_recovers_rendered_dab_concentration():
    rng = np.random.default_rng(0)
    conc = rng.uniform(0.0, 1.0, (32, 48, 3)).astype(np.float32)
    dab = dab_od(concentrations_to_rgb(conc, HED))
    assert dab.shape == (32, 48) and dab.dtype == np.float32
    # uint8 rounding of the rendered image is the only error.
    np.testing.assert_allclose(dab, conc[..., 2], atol=0.03)


def test_dab_od_of_white_is_zero():
    assert np.abs(dab_od(np.full((4, 4, 3), 255, np.uint8))).max() < 1e-6


def test_dab_od_needs_a_dab_stain():
    he_only = StainMatrix(HED.vectors, ("hematoxylin", "eosin", "residual"))
    with pytest.raises(StainError, match="no 'dab' vector"):
        dab_od(np.zeros((4, 4, 3), np.uint8), he_only)


def test_dab_od_rejects_non_rgb():
    with pytest.raises(StainError, match="RGB"):
        dab_od(np.zeros((4, 4, 4), np.uint8))
