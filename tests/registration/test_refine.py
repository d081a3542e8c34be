"""Refinement recovers known transforms of a pixel-aligned pair, flips and turns included."""

import numpy as np
import pytest

from tests.registration.conftest import SAME_SIZE, slide, tissue_points, tre, warp_affine
from vstain.registration import AGREEMENT_OK, QUALITY_OK, register
from vstain.registration.refine import apply

N = SAME_SIZE


def _similar(deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """Rotation by ``deg`` and ``scale`` about the image centre, then ``shift`` (x/y)."""
    t = np.deg2rad(deg)
    m = np.eye(3)
    m[:2, :2] = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.array([N - 1, N - 1]) / 2
    m[:2, 2] = c + np.asarray(shift) - m[:2, :2] @ c
    return m


ROT90 = np.array([[0, 1, 0], [-1, 0, N - 1], [0, 0, 1]], float)  # as np.rot90 moves (x, y)
FLIP = np.array([[-1, 0, N - 1], [0, 1, 0], [0, 0, 1]], float)  # as np.fliplr
SHEAR = np.array([[1.04, 0.05, 0], [-0.03, 0.95, 0], [0, 0, 1]])

CASES = {
    "rigid": _similar(11.0, 1.0, (30.0, -22.0)),
    "similarity": _similar(-14.0, 1.08, (-25.0, 18.0)),
    "affine": _similar(6.0, 1.0, (10.0, 5.0)) @ SHEAR,
    "rot90": ROT90 @ _similar(-4.0, 0.93, (12.0, 0.0)),
    "rot180": ROT90 @ ROT90 @ _similar(9.0, 1.0, (0.0, -15.0)),
    "flip-rot270": np.linalg.matrix_power(ROT90, 3) @ FLIP @ _similar(5.0, 1.04, (8.0, 8.0)),
}
MEDIAN_TOL, P90_TOL = 0.2, 0.4  # px; the coarse similarity alone misses by 0.6 to 14 px


SLOW = {"similarity", "rot180"}  # covered in spirit by the others; run in the slow lane


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES]
)
def test_refinement_recovers_known_affine(same_pair, name):
    he, ihc = same_pair
    truth = CASES[name]
    reg = register(slide("he", he), slide("ihc", warp_affine(ihc, truth, he.shape[:2])))
    assert reg.ok and reg.agreement > 0.6  # windows the map sends off the IHC do not agree
    p = tissue_points(he)
    err = tre(reg.he_to_ihc_points(p), apply(truth, p), he.shape[:2])
    assert len(err) > 200
    assert np.median(err) < MEDIAN_TOL and np.percentile(err, 90) < P90_TOL


def test_refinement_with_different_pixel_sizes(same_pair):
    he, ihc = same_pair
    # the IHC scanned at 1.0 um/px (half the H&E's resolution), turned 8 degrees
    truth = np.diag([0.5, 0.5, 1]) @ _similar(8.0, 1.0, (14.0, -9.0))
    truth[:2, 2] -= 0.25  # block-centre convention of a 2x downsample
    moved = warp_affine(ihc, truth, (N // 2, N // 2))
    reg = register(slide("he", he), slide("ihc", moved, pixel_size=1.0))
    assert reg.ok
    p = tissue_points(he)
    err = tre(reg.he_to_ihc_points(p), apply(truth, p), moved.shape[:2], margin=4)
    assert np.median(err) < MEDIAN_TOL / 2 and np.percentile(err, 90) < P90_TOL / 2  # IHC px
    np.testing.assert_allclose(np.sqrt(abs(np.linalg.det(reg.matrix_um[:2, :2]))), 1.0, atol=5e-3)


def _scrambled(image: np.ndarray, blocks: int) -> np.ndarray:
    """``image`` cut into blocks x blocks tiles that are shuffled and turned."""
    n = image.shape[0] // blocks
    tiles = [
        image[i : i + n, j : j + n]
        for i in range(0, blocks * n, n)
        for j in range(0, blocks * n, n)
    ]
    order = np.random.default_rng(0).permutation(len(tiles))
    rows = [
        np.concatenate([np.rot90(tiles[k], k % 4) for k in order[r : r + blocks]], 1)
        for r in range(0, len(order), blocks)
    ]
    return np.concatenate(rows, 0)


def test_scrambled_ihc_reports_low_agreement(same_pair):
    he, ihc = same_pair
    reg = register(slide("he", he), slide("ihc", _scrambled(ihc, 3)))
    # a map fits one of the nine pieces, well enough for the NCC, but not the tissue as a whole
    assert reg.quality > QUALITY_OK
    assert reg.agreement < AGREEMENT_OK and not reg.ok
