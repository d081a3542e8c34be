import dask.array as da
import numpy as np
import pytest
from skimage.transform import AffineTransform, warp

from vstain.io.slide import Slide
from vstain.synth import make_spec, slide_arrays

SAME_SIZE = 768  # side of the same-section pair that known transforms are applied to


def slide(name: str, array: np.ndarray, pixel_size: float | None = 0.5) -> Slide:
    """A one-level Slide of an in-memory RGB array."""
    return Slide(
        name, [da.from_array(np.ascontiguousarray(array), chunks=(512, 512, 3))], pixel_size
    )


def warp_affine(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` moved by ``matrix`` (3 x 3, x/y): output pixel q shows input ``matrix^-1 q``."""
    out = warp(image, AffineTransform(matrix=np.linalg.inv(matrix)), output_shape=shape, cval=1.0)
    return np.round(out * 255).astype(np.uint8)


def tissue_points(he: np.ndarray, step: int = 24) -> np.ndarray:
    """(N, 2) (x, y) grid points of ``he`` that lie on tissue."""
    ys, xs = np.mgrid[step // 2 : he.shape[0] : step, step // 2 : he.shape[1] : step]
    keep = he[ys, xs].mean(-1) < 215
    return np.c_[xs[keep], ys[keep]].astype(float)


def tre(estimate: np.ndarray, truth: np.ndarray, shape: tuple[int, int], margin: int = 8):
    """Registration errors (px) of the points whose true position lies inside ``shape``."""
    inside = (truth >= margin).all(1) & (truth[:, 0] < shape[1] - margin)
    inside &= truth[:, 1] < shape[0] - margin
    return np.hypot(*(estimate - truth)[inside].T)


@pytest.fixture(scope="module")
def same_pair():
    """A pixel-aligned (same-section) H&E / IHC pair, uint8 (768, 768, 3) each."""
    spec = make_spec(5, "ck818", SAME_SIZE, mode="same-section")
    return tuple(np.asarray(a) for a in slide_arrays(spec))
