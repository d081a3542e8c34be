"""The normalise option: slide statistics once per slide, recorded in the store and kept by a
resume; the model's input is the normalised H&E."""

import dataclasses

import numpy as np
import pytest
import torch
import zarr

from vstain.color.stain_normalisation import Normaliser, slide_stain_statistics, stain_reference
from vstain.errors import ModelError
from vstain.io import open_slide, write_ome_tiff
from vstain.models import create
from vstain.pipeline import plan_run, run_plan, stain_slide
from vstain.synth import synth_slide
from vstain.tiles.job import slide_tissue_mask


@pytest.fixture(scope="module")
def synth_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "he.ome.tif"
    write_ome_tiff(synth_slide("ck818", size=256, seed=3).he, path, pixel_size=0.5)
    return path


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = create("pix2pix", "small", tile_size=128, pixel_size=0.5)
    reference = stain_reference([np.asarray(synth_slide("ck818", size=256, seed=9).he)])
    model.card = dataclasses.replace(model.card, stain_reference=reference)
    return model


def test_the_model_sees_the_normalised_slide_and_the_store_keeps_the_statistics(
    synth_path, model, tmp_path
):
    out = tmp_path / "n.zarr"
    plan = plan_run(
        synth_path, model, out, region=(0, 0, 128, 128), options={"normalise": "reinhard"}
    )
    seen = []
    forward = model.infer
    model.infer = lambda x, **kw: seen.append(x.clone()) or forward(x, **kw)
    run_plan(plan)
    slide = open_slide(synth_path)
    stats = slide_stain_statistics(slide, "reinhard", mask=slide_tissue_mask(slide))
    recorded = zarr.open_group(out, mode="r").attrs["vstain"]["normalise"]
    assert recorded["method"] == "reinhard"
    np.testing.assert_allclose(recorded["slide"]["mean"], stats["mean"], rtol=1e-5)
    window = np.asarray(slide.levels[0][:128, :128])  # tile 0's core, inside its window
    expected = Normaliser("reinhard", stats, model.card.stain_reference["reinhard"])(window)
    halo = model.card.halo
    got = (seen[-1][0, :, halo : halo + 128, halo : halo + 128] + 1) / 2  # [-1, 1] -> [0, 1]
    got = np.rint(got.permute(1, 2, 0).numpy() * 255)
    assert np.abs(got - expected).max() <= 1
    assert not np.array_equal(expected, window)

    again = plan_run(
        synth_path,
        model,
        out,
        region=(0, 0, 256, 256),
        resume=True,
        options={"normalise": "reinhard"},
    )
    assert again.normaliser.source == recorded["slide"]  # the store's, not re-estimated
    with pytest.raises(Exception, match="other settings"):
        stain_slide(synth_path, model, out, resume=True, options={"normalise": "macenko"})


def test_normalise_needs_a_reference_in_the_card(synth_path, tmp_path):
    bare = create("pix2pix", "small", tile_size=128, pixel_size=0.5)
    with pytest.raises(ModelError, match="no macenko stain reference"):
        plan_run(synth_path, bare, tmp_path / "o.zarr", options={"normalise": "macenko"})
    with pytest.raises(ModelError, match="normalise must be one of"):
        plan_run(synth_path, bare, tmp_path / "o.zarr", options={"normalise": "vahadane"})
