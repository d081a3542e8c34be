import dask.array as da
import numpy as np
import pytest

from vstain.io.slide import Slide
from vstain.registration import registered_reader
from vstain.registration.registration import Registration, register
from vstain.synth import SectionTransform, make_spec, slide_arrays

SIZE = 1024


@pytest.fixture(scope="module")
def pair():
    spec = make_spec(3, "ck818", SIZE, mode="adjacent-section")
    he, ihc = (np.asarray(a) for a in slide_arrays(spec))
    return he, ihc, SectionTransform.from_spec(spec)


def _slide(name, array, pixel_size=0.5):
    return Slide(name, [da.from_array(array, chunks=(512, 512, 3))], pixel_size)


def _tre(reg: Registration, truth: SectionTransform, post: np.ndarray) -> float:
    ys, xs = np.mgrid[150 : SIZE - 150 : 40, 150 : SIZE - 150 : 40].astype(float)
    qx, qy = truth.he_to_ihc(xs.ravel(), ys.ravel())
    q = np.c_[qx, qy] @ post[:2, :2].T + post[:2, 2]
    est = reg.he_to_ihc_points(np.c_[xs.ravel(), ys.ravel()])
    return float(np.median(np.hypot(*(est - q).T)))


ROT90 = np.array([[0, 1, 0], [-1, 0, SIZE - 1], [0, 0, 1]], float)  # np.rot90 on (x, y)
FLIP = np.array([[-1, 0, SIZE - 1], [0, 1, 0], [0, 0, 1]], float)  # np.fliplr


@pytest.mark.parametrize(
    ("op", "post"),
    [
        (lambda a: a, np.eye(3)),
        (lambda a: np.rot90(a, 1), ROT90),
        pytest.param(lambda a: np.rot90(a, 2), ROT90 @ ROT90, marks=pytest.mark.slow),
        pytest.param(lambda a: np.rot90(a, 3), ROT90 @ ROT90 @ ROT90, marks=pytest.mark.slow),
        pytest.param(lambda a: a[:, ::-1], FLIP, marks=pytest.mark.slow),
        (lambda a: np.rot90(a[:, ::-1], 1), ROT90 @ FLIP),
    ],
    ids=["adjacent", "rot90", "rot180", "rot270", "flip", "flip-rot90"],
)
def test_recovers_simulated_transform(pair, op, post):
    he, ihc, truth = pair
    reg = register(_slide("he", he), _slide("ihc", np.ascontiguousarray(op(ihc))))
    assert reg.ok
    # the truth includes the simulator's elastic part (about 3 px), which a similarity cannot fit
    assert _tre(reg, truth, post) < 4.0


def test_different_pixel_size(pair):
    he, ihc, truth = pair
    small = ihc.reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    reg = register(_slide("he", he), _slide("ihc", small, pixel_size=1.0))
    half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
    assert reg.ok
    assert _tre(reg, truth, half) < 2.0  # in IHC px, each 2 H&E px
    np.testing.assert_allclose(abs(np.linalg.det(reg.matrix_um[:2, :2])), 1.0, atol=0.03)


def test_unrelated_or_blank_ihc_is_not_ok(pair):
    he, _, _ = pair
    other = np.asarray(slide_arrays(make_spec(99, "ck818", SIZE, mode="adjacent-section"))[1])
    for ihc in (other, np.full_like(he, 240)):
        reg = register(_slide("he", he), _slide("ihc", ihc))
        assert not reg.ok
        assert reg.quality < 0.3


def test_points_tile_and_json(pair, tmp_path):
    he, ihc, _ = pair
    reg = register(_slide("he", he), _slide("ihc", ihc))
    pts = np.array([[100.0, 200.0], [700.0, 50.0]])
    np.testing.assert_allclose(reg.ihc_to_he_points(reg.he_to_ihc_points(pts)), pts, atol=1e-9)
    reg.save(tmp_path / "reg.json")
    loaded = Registration.load(tmp_path / "reg.json")
    np.testing.assert_allclose(loaded.matrix, reg.matrix)
    assert loaded.quality == reg.quality
    tile = reg.warp_ihc_tile(_slide("ihc", ihc), 300, 300, 256, 256)
    assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
    he_tile = he[300:556, 300:556].astype(float).mean(-1)
    corr = np.corrcoef(he_tile.ravel(), tile.astype(float).mean(-1).ravel())[0, 1]
    unwarped = np.corrcoef(he_tile.ravel(), ihc[300:556, 300:556].astype(float).mean(-1).ravel())
    assert corr > 0.3 and corr > unwarped[0, 1] + 0.1

    # the reader fine-tuning takes: (x, y, w, h, level) of the H&E, level by the H&E's pyramid
    half = np.ascontiguousarray(he[::2, ::2])
    pyramid = Slide("he", [da.from_array(he), da.from_array(half)], 0.5)
    read = registered_reader(pyramid, _slide("ihc", ihc), reg)
    np.testing.assert_array_equal(read(300, 300, 256, 256, 0), tile)
    coarse = read(150, 150, 128, 128, 1).astype(float)
    assert coarse.shape == (128, 128, 3)
    assert np.abs(coarse - tile[::2, ::2]).mean() < np.abs(coarse - tile[:128, :128]).mean()
