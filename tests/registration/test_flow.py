"""Local refinement: the optical-flow field corrects a known smooth deformation."""

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from tests.registration.conftest import SAME_SIZE, slide, tissue_points, tre
from vstain.registration import Registration, RegistrationError, register

AMPLITUDE, PERIOD = 5.0, 384.0  # px: the deformation of the IHC


def _u(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known smooth displacement: IHC pixel q shows H&E pixel q + u(q)."""
    k = 2 * np.pi / PERIOD
    return AMPLITUDE * np.sin(k * y + 0.5), AMPLITUDE * np.cos(k * x)


def _deformed(ihc: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:SAME_SIZE, 0:SAME_SIZE].astype(float)
    ux, uy = _u(xs, ys)
    coords = [ys + uy, xs + ux]
    return np.stack(
        [ndimage.map_coordinates(ihc[..., c], coords, order=1, cval=255) for c in range(3)], -1
    )


def _truth(p: np.ndarray) -> np.ndarray:
    """IHC position of H&E points: q with q + u(q) = p, by fixed-point iteration."""
    q = p.copy()
    for _ in range(50):
        q = p - np.stack(_u(q[:, 0], q[:, 1]), -1)
    return q


@pytest.fixture(scope="module")
def deformed(same_pair):
    he, ihc = same_pair
    moved = _deformed(ihc)
    return he, moved, register(slide("he", he), slide("ihc", moved), flow=True)


def test_flow_corrects_smooth_deformation(deformed):
    he, _, reg = deformed
    assert reg.ok and reg.field is not None
    p = tissue_points(he)
    truth = _truth(p)
    affine_only = tre(replace(reg, field=None).he_to_ihc_points(p), truth, he.shape[:2])
    local = tre(reg.he_to_ihc_points(p), truth, he.shape[:2])
    assert np.median(affine_only) > 2.5  # the deformation matters ...
    assert np.median(local) < 0.5 and np.percentile(local, 90) < 1.0  # ... and flow removes it


def test_field_round_trips_inverts_and_warps_tile_by_tile(deformed, tmp_path):
    he, moved, reg = deformed
    reg.save(tmp_path / "reg.json")
    loaded = Registration.load(tmp_path / "reg.json")
    p = tissue_points(he)
    np.testing.assert_allclose(loaded.he_to_ihc_points(p), reg.he_to_ihc_points(p), atol=2e-3)
    np.testing.assert_allclose(reg.ihc_to_he_points(reg.he_to_ihc_points(p)), p, atol=1e-3)
    ihc = slide("ihc", moved)
    whole, covered = reg.warp_ihc_region(ihc, 100, 200, 256, 128)
    left, right = (reg.warp_ihc_region(ihc, x, 200, 128, 128)[0] for x in (100, 228))
    np.testing.assert_array_equal(whole, np.concatenate([left, right], 1))
    assert covered.all()
    # the warped IHC lines up with the H&E: same hematoxylin pattern
    grey_he = he[200:328, 100:356].mean(-1)
    assert np.corrcoef(grey_he.ravel(), whole.mean(-1).ravel())[0, 1] > 0.5


def test_malformed_field_in_json_is_a_registration_error(deformed, tmp_path):
    _, _, reg = deformed
    path = tmp_path / "reg.json"
    reg.save(path)
    data = json.loads(path.read_text())
    data["field"]["dy"] = data["field"]["dy"][:-1]  # grids of different shapes
    path.write_text(json.dumps(data))
    with pytest.raises(RegistrationError, match="Save it again"):
        Registration.load(path)
