"""Whole slides as lazy dask arrays."""

import numpy as np
import pytest

from vstain.synth import SynthImage, make_spec, render_he, render_ihc, synth_slide


def test_slide_arrays_are_lazy_and_render_on_read():
    slide = synth_slide("cd3", 20000, seed=2)
    assert slide.he.shape == slide.ihc.shape == (20000, 20000, 3)
    assert slide.he.dtype == np.uint8 and slide.he.chunksize == (1024, 1024, 3)
    assert slide.spec.marker == "cd3" and slide.transform is None
    box = (slice(9000, 9300), slice(8100, 8400))
    np.testing.assert_array_equal(
        slide.he[box].compute(), render_he(slide.spec, 8100, 9000, 300, 300)
    )
    np.testing.assert_array_equal(
        slide.ihc[box].compute(), render_ihc(slide.spec, 8100, 9000, 300, 300)
    )


def test_chunks_agree_with_a_region_spanning_them():
    slide = synth_slide("ki67", (1536, 2048), seed=4, chunk=512, mode="adjacent-section")
    assert slide.transform is not None
    region = slide.ihc[400:700, 900:1200].compute()  # spans four chunks
    np.testing.assert_array_equal(region, render_ihc(slide.spec, 900, 400, 300, 300))


def test_array_like_indexing():
    image = SynthImage(make_spec(1, "ck818", 512), "he")
    full = image[:, :]
    assert full.shape == (512, 512, 3)
    np.testing.assert_array_equal(image[100:110, 20:40:3], full[100:110, 20:40:3])
    np.testing.assert_array_equal(image[5, -10:], full[5, -10:])
    np.testing.assert_array_equal(image[..., 1][7:9, 7:9], full[7:9, 7:9, 1])
    assert image[10:10, 0:5].shape == (0, 5, 3)
    with pytest.raises(IndexError):
        image[600, 0]
