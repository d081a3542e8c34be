import numpy as np
import pytest

from tests.metrics.conftest import blobs, stained
from vstain.metrics import colour_difference, dab_difference, positivity_error


def test_more_dab_in_virtual_has_positive_sign():
    dab = np.full((64, 64), 0.05, np.float32)
    real = stained(dab, haematoxylin=0.2)
    dab[:32] = 0.5  # the virtual stain adds DAB in the top half
    virtual = stained(dab, haematoxylin=0.2)
    diff = dab_difference(virtual, real)
    assert diff[:32].mean() == pytest.approx(0.45, abs=0.03)
    assert np.abs(diff[32:]).max() < 0.02
    assert dab_difference(real, virtual)[:32].mean() == pytest.approx(-diff[:32].mean())


def test_colour_difference_is_zero_only_where_colours_agree(four_cells):
    real = stained(blobs((50, 50), four_cells))
    virtual = stained(blobs((50, 50), four_cells[:2]))
    delta = colour_difference(virtual, real)
    assert delta.shape == (50, 50) and delta.dtype == np.float32
    assert delta[10, 10] == pytest.approx(0, abs=1e-4)  # a cell both have
    assert delta[40, 40] > 10  # a brown cell the virtual misses: clearly visible
    assert colour_difference(real, real).max() == pytest.approx(0, abs=1e-6)


def test_positivity_error_of_half_positive_virtual():
    dab = np.full((40, 40), 0.05, np.float32)
    real = stained(dab)
    dab[:20] = 0.5  # 2+ (0.4 <= 0.5 < 0.6) on half the pixels
    err = positivity_error(stained(dab), real)
    assert err["percent_positive_real"] == pytest.approx(0)
    assert err["percent_positive_error"] == pytest.approx(50, abs=1)
    assert err["h_score_error"] == pytest.approx(100, abs=2)
