"""The run planner: every check of a request in one place, before anything is written; and what
--overwrite may replace (only vstain's own outputs, never the input)."""

import numpy as np
import pytest
import torch
import zarr

from tests.tiles.conftest import make_tissue_image
from vstain.cli import main
from vstain.errors import ModelError, OutputExistsError, RegionError, StainError, VstainError
from vstain.io import open_slide, write_ome_tiff, write_ome_zarr
from vstain.models import create
from vstain.pipeline import plan_run, run_plan, stain_slide
from vstain.tiles.lock import StoreBusyError, StoreLock, lock_path
from vstain.tiles.store import COMPUTED


def stain_args(slide, model, out, *extra):
    return ["stain", str(slide), "--model", str(model), "--out", str(out), *extra]


@pytest.mark.parametrize(
    "request_, error, words",
    [
        ({"tile": 130}, ModelError, "multiple of"),
        ({"tile": 0}, ModelError, "multiple of"),
        ({"tile": -16}, ModelError, "multiple of"),
        ({"tile": 99999}, ModelError, "multiple of"),
        ({"tile": 128.0}, ModelError, "multiple of"),
        ({"batch_size": 0}, VstainError, "batch size"),
        ({"batch_size": -1}, VstainError, "batch size"),
        ({"region": (0, 0, 0, 0)}, RegionError, "outside"),
        ({"region": (10, 10, -5, 20)}, RegionError, "outside"),
        ({"region": (400, 0, 100, 100)}, RegionError, "outside"),
        ({"options": {"origin": [0, 0]}}, ModelError, "tile engine"),
        ({"options": {"steps": 5}}, ModelError, "does not take"),
        ({"level": 7}, VstainError, "Level"),
        ({"blend": "average"}, VstainError, "Blend"),
    ],
)
def test_bad_requests_fail_before_the_output_exists(
    checkpoint, slide_path, tmp_path, request_, error, words
):
    out = tmp_path / "o.zarr"
    with pytest.raises(error, match=words):
        plan_run(slide_path, checkpoint, out, **request_)
    assert not out.exists()


@pytest.mark.parametrize(
    "option, words",
    [
        ("steps=abc", "steps must be int"),
        ("seed=1.5", "seed must be int"),
        ("sampler=7", "sampler must be str"),
    ],
)
def test_option_values_of_the_wrong_type_are_refused(slide_path, tmp_path, option, words, capsys):
    out = tmp_path / "o.zarr"
    args = stain_args(slide_path, "stain-diffuser", out, "--option", option)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_tile_that_does_not_suit_the_model_is_one_line_in_cli_and_batch(
    slide_path, tmp_path, capsys
):
    for args in (
        stain_args(slide_path, "k-stain", tmp_path / "o.zarr", "--tile", "500"),
        [
            "batch",
            str(slide_path),
            "--model",
            "k-stain",
            "--out",
            str(tmp_path / "b"),
            "--tile",
            "500",
            "--workers",
            "1",
        ],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("vstain: error: Tile size 500 does not suit k-stain")
        assert err.count("\n") == 1


@pytest.mark.parametrize("name", ["o.png", "o", "o.json"])
def test_outputs_are_zarr_or_ome_tiff(checkpoint, slide_path, tmp_path, name):
    with pytest.raises(VstainError, match="OME-Zarr"):
        plan_run(slide_path, checkpoint, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_overwrite_never_deletes_a_folder_vstain_did_not_write(
    checkpoint, slide_path, tmp_path, capsys
):
    project = tmp_path / "proj.zarr"
    (project / "src").mkdir(parents=True)
    (project / "src" / "a.py").write_text("a")
    for flag in ("--overwrite", "--resume"):
        assert main(stain_args(slide_path, checkpoint, project, "--region", "0,0,64,64", flag)) == 2
        assert "not a vstain output" in capsys.readouterr().err
    assert (project / "src" / "a.py").read_text() == "a"


def test_overwrite_replaces_a_vstain_store(checkpoint, slide_path, tmp_path):
    out = tmp_path / "o.zarr"
    stain_slide(slide_path, checkpoint, out, region=(0, 0, 64, 64))
    again = stain_slide(slide_path, checkpoint, out, region=(0, 0, 64, 64), overwrite=True)
    assert again.computed == 1 and again.already_done == 0
    assert not lock_path(out).exists()  # the lock goes with the run


def test_the_output_cannot_be_the_input(checkpoint, tmp_path, capsys):
    image = make_tissue_image(256, 256)
    tif, store = tmp_path / "b.ome.tif", tmp_path / "in.zarr"
    write_ome_tiff(image, tif, pixel_size=0.5)
    write_ome_zarr(image, store, pixel_size=0.5)
    before = {path: open_slide(path).levels[0].compute() for path in (tif, store)}
    for source, out in ((tif, tif), (store, store), (store, store / "inner.zarr")):
        assert main(stain_args(source, checkpoint, out, "--overwrite")) == 2
        assert "slide being read" in capsys.readouterr().err
    for path, pixels in before.items():
        np.testing.assert_array_equal(open_slide(path).levels[0].compute(), pixels)


def test_overwrite_of_a_tiff_vstain_did_not_write_is_refused(checkpoint, slide_path, tmp_path):
    import tifffile

    foreign = tmp_path / "v.ome.tif"
    tifffile.imwrite(foreign, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(OutputExistsError, match="not written by vstain"):
        plan_run(slide_path, checkpoint, foreign, overwrite=True)
    ours = tmp_path / "ours.ome.tif"
    stain_slide(slide_path, checkpoint, ours)
    stain_slide(slide_path, checkpoint, ours, overwrite=True)  # its own output: replaced


def test_a_second_writer_is_refused_at_once_naming_the_first(checkpoint, slide_path, tmp_path):
    out = tmp_path / "o.zarr"
    plan = plan_run(slide_path, checkpoint, out, region=(0, 0, 64, 64))
    with StoreLock(out):  # as a running stain of that store holds it
        with pytest.raises(StoreBusyError, match=r"being written by process \d+"):
            run_plan(plan)
        with pytest.raises(StoreBusyError):
            StoreLock(out).acquire()
    assert run_plan(plan).computed == 1  # free again once the first run ends


def test_non_finite_model_output_stops_the_run_and_marks_nothing_done(slide_path, tmp_path):
    torch.manual_seed(0)
    model = create("pix2pix", "small", tile_size=128, pixel_size=0.5)
    out = tmp_path / "nan.zarr"
    stain_slide(slide_path, model, out, region=(0, 0, 64, 64))  # one good tile
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # the same model, diverged
    with pytest.raises(StainError, match="NaN"):
        stain_slide(slide_path, model, out, region=(0, 0, 256, 128), resume=True)
    done = zarr.open_group(out, mode="r")["done"][:]
    assert (done == COMPUTED).sum() == 1 and done[0, 0] == COMPUTED


def test_outputs_that_the_options_do_not_produce_are_not_stored(slide_path, tmp_path):
    model = create("asp-dgrank", "small", tile_size=128, pixel_size=0.5)
    for tta, stored in ((1, ["ihc"]), (2, ["ihc", "uncertainty"])):
        plan = plan_run(slide_path, model, tmp_path / f"t{tta}.zarr", options={"tta": tta})
        assert [s.name for s in plan.specs] == stored
    diffuser = create("stain-diffuser-bidirectional", "small")
    assert diffuser.outputs_for({}) == ["ihc"]
    assert diffuser.outputs_for({"n_samples": 3}) == ["ihc", "uncertainty"]
    multitask = create("stain-diffuser", "small")
    assert multitask.outputs_for({"segment": True}) == ["ihc", "segmentation"]


def test_what_a_store_records_besides_its_settings_does_not_block_a_resume(
    checkpoint, slide_path, tmp_path
):
    """A batch store has no precision (its client plans on the CPU); glass and precision are
    kept by the store that was made, never compared by a resume."""
    out = tmp_path / "o.zarr"
    stain_slide(slide_path, checkpoint, out, region=(0, 0, 64, 64))
    root = zarr.open_group(out, mode="r+")
    attrs = dict(root.attrs["vstain"])
    assert {"glass", "precision"} <= set(attrs)
    glass = attrs["glass"]
    del attrs["precision"]
    root.attrs["vstain"] = attrs
    result = stain_slide(slide_path, checkpoint, out, region=(0, 0, 256, 128), resume=True)
    assert result.already_done == 1 and result.computed >= 1
    assert zarr.open_group(out, mode="r").attrs["vstain"]["glass"] == glass
