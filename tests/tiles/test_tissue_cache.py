"""The tissue mask of a slide file is computed once per file version, not on every staining call."""

import os

import numpy as np
from skimage.io import imsave

from tests.tiles.conftest import make_tissue_image
from vstain.io import open_slide
from vstain.tiles.job import slide_tissue_mask


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
