"""The tissue mask of a slide file is computed once per file version, not on every staining call,
and fast."""

import os

import numpy as np
from skimage.color import rgb2hsv
from skimage.io import imsave

from tests.tiles.conftest import make_tissue_image
from vstain.color.optics import rgb_to_od
from vstain.io import open_slide
from vstain.tiles.job import slide_tissue_mask
from vstain.tiles.tissue import mean_od, saturation


def test_mask_is_reused_for_the_same_file_and_recomputed_when_it_changes(tmp_path):
    path = tmp_path / "slide.png"
    image = make_tissue_image()
    imsave(path, image, check_contrast=False)
    first = slide_tissue_mask(open_slide(path))
    assert slide_tissue_mask(open_slide(path)) is first  # a new Slide of the same file
    assert not first.flags.writeable

    image[:, : image.shape[1] // 2] = 245  # left half becomes glass
    imsave(path, image, check_contrast=False)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    second = slide_tissue_mask(open_slide(path))
    assert second is not first
    assert second[:, : image.shape[1] // 3].mean() < 0.05 < first[:, : image.shape[1] // 3].mean()
    assert np.array_equal(second, slide_tissue_mask(open_slide(path)))


def test_saturation_and_optical_density_by_table_equal_the_direct_ones():
    """The mask's inputs computed fast (the first click waits for them) are bit for bit the
    ones scikit-image's HSV and the per-channel optical density give."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3)).astype(np.uint8)
    rgb[:5] = rgb[:5, :, :1]  # grey pixels: saturation 0, black included
    rgb[5, :] = 0
    np.testing.assert_array_equal(saturation(rgb), rgb2hsv(rgb)[..., 1])
    np.testing.assert_array_equal(mean_od(rgb), rgb_to_od(rgb).mean(axis=-1))
