"""A training set's stain reference, from its H&E files, as a model card holds it."""

import imageio.v3 as iio
import numpy as np

from vstain.color import stain_statistics
from vstain.models import ModelCard
from vstain.synth import make_spec, render_he
from vstain.train.datasets import dataset_stain_reference, match_pairs


def test_dataset_stain_reference_pools_the_he_images(tmp_path):
    (tmp_path / "he").mkdir()
    (tmp_path / "ihc").mkdir()
    spec = make_spec(6, size=512)
    tiles = [render_he(spec, x, 64, 128, 128) for x in (64, 192, 320)]
    for i, tile in enumerate(tiles):
        iio.imwrite(tmp_path / "he" / f"t{i}.png", tile)
        iio.imwrite(tmp_path / "ihc" / f"t{i}.png", np.full_like(tile, 200))  # not used
    reference = dataset_stain_reference(match_pairs(tmp_path / "he", tmp_path / "ihc"))
    assert ModelCard(architecture="pix2pix", stain_reference=reference).stain_reference
    pooled = np.concatenate([t.reshape(-1, 3) for t in tiles])
    assert reference["reinhard"] == stain_statistics(pooled, "reinhard", max_pixels=None)
    assert reference == dataset_stain_reference(match_pairs(tmp_path / "he", tmp_path / "ihc"))
