"""Compare-view helpers: warped real IHC, DAB difference, discordance, positivity."""

import csv

import dask.array as da
import numpy as np
import pytest

from tests.registration.conftest import slide
from vstain.color import HED, od_to_rgb, positivity, rgb_to_od
from vstain.errors import StainError
from vstain.io.slide import Slide
from vstain.registration import Registration
from vstain.review.maps import (
    BOTH,
    REAL_ONLY,
    VIRTUAL_ONLY,
    compare_positivity,
    difference_map,
    discordance,
    region_pair,
    tissue,
)
from vstain.synth import make_spec, render_tile

IDENTITY = Registration(np.eye(3), 0.5, 0.5, 1.0, 0)
PATCH = (slice(100, 160), slice(120, 200))  # rows, columns of the changed region
ADDED_DAB = 0.5  # OD


@pytest.fixture(scope="module")
def ihc():
    return render_tile(make_spec(0, "ck818", 1024, mode="same-section"), 256, 256, 512, 512)


def _pyramid(array: np.ndarray) -> Slide:
    """Two levels: the array and its 2 x 2 block average."""
    half = array.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return Slide("s", [da.from_array(array), da.from_array(half)], 0.5)


def _with_dab(rgb: np.ndarray, od: float) -> np.ndarray:
    """``rgb`` with ``od`` of DAB (HED's vector) added inside ``PATCH``."""
    out = rgb.copy()
    patch = rgb_to_od(rgb[PATCH]) + od * HED.vectors[2]
    out[PATCH] = od_to_rgb(patch)
    return out


@pytest.mark.parametrize("level", [0, 1])
def test_slide_against_itself_has_no_difference(ihc, level):
    s = _pyramid(ihc.ihc)
    n = 512 >> level
    pair = region_pair(IDENTITY, s, s, 0, 0, n, n, level)
    np.testing.assert_array_equal(pair.real, pair.virtual)
    assert pair.covered.all()
    np.testing.assert_array_equal(difference_map(pair), 0.0)
    labels = discordance(pair)
    assert not np.isin(labels, (VIRTUAL_ONLY, REAL_ONLY)).any() and (labels == BOTH).any()


@pytest.mark.parametrize(
    ("virtual_od", "real_od", "sign", "label"),
    [(ADDED_DAB, 0, 1, VIRTUAL_ONLY), (0, ADDED_DAB, -1, REAL_ONLY)],
)
def test_known_dab_change_shows_with_its_sign(ihc, virtual_od, real_od, sign, label):
    base = ihc.ihc_clean
    virtual, real = (slide(n, _with_dab(base, od)) for n, od in (("v", virtual_od), ("r", real_od)))
    pair = region_pair(IDENTITY, virtual, real, 0, 0, 512, 512)
    diff = difference_map(pair)
    changed = np.zeros(diff.shape, bool)
    changed[PATCH] = True
    np.testing.assert_allclose(diff[changed], sign * ADDED_DAB, atol=0.1)
    assert np.abs(diff[~changed]).max() < 1e-6
    labels = discordance(pair)
    assert (labels[changed] == label).mean() > 0.5  # the rest of the patch was positive already
    assert not np.isin(labels[~changed], (VIRTUAL_ONLY, REAL_ONLY)).any()


@pytest.mark.parametrize("marker", ["ck818", "cd3", "ki67"])
def test_positivity_of_simulated_ihc_matches_truth(marker):
    tile = render_tile(make_spec(0, marker, 1024, mode="same-section"), 256, 256, 512, 512)
    s = slide("ihc", tile.ihc)
    pair = region_pair(IDENTITY, s, s, 0, 0, 512, 512)
    measured = compare_positivity(pair).real
    truth = positivity(tile.ihc_truth.dab, mask=tissue(pair))
    assert measured.total == truth.total > 100_000
    # scanner blur, noise, JPEG and jittered stain vectors against the true DAB concentration
    assert abs(measured.percent_positive - truth.percent_positive) < 3.5
    assert abs(measured.h_score - truth.h_score) < 7.0


def test_positivity_rows_and_csv(ihc, tmp_path):
    virtual = slide("v", _with_dab(ihc.ihc_clean, ADDED_DAB))
    pair = region_pair(IDENTITY, virtual, slide("r", ihc.ihc_clean), 0, 0, 512, 512)
    comparison = compare_positivity(pair)
    v, r, d = comparison.rows()
    assert (v["stain"], r["stain"], d["stain"]) == ("virtual", "real", "virtual - real")
    assert d["percent_positive"] == pytest.approx(v["percent_positive"] - r["percent_positive"])
    assert d["percent_positive"] > 0 and d["h_score"] > 0  # the virtual has the extra DAB
    comparison.write_csv(tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        read = list(csv.DictReader(f))
    assert [row["stain"] for row in read] == ["virtual", "real", "virtual - real"]
    assert float(read[0]["h_score"]) == pytest.approx(v["h_score"])
    with pytest.raises(StainError, match="same height and width"):
        compare_positivity(pair, mask=np.ones((10, 10), bool))
