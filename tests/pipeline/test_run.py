"""`vstain stain` end to end with a small checkpoint the test saves."""

import numpy as np
import pytest
import torch

from vstain.cli import main
from vstain.io import open_slide, write_ome_tiff
from vstain.models import create
from vstain.pipeline import load_model, stain_slide


def test_stain_region_to_zarr_and_resume(checkpoint, slide_path, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    args = [
        "stain",
        str(slide_path),
        "--model",
        str(checkpoint),
        "--out",
        str(out),
        "--region",
        "0,0,200,100",
    ]
    assert main(args) == 0
    assert "2 tiles computed" in capsys.readouterr().out
    ihc = open_slide(out).levels[0].compute()
    assert ihc.shape == (300, 420, 3)
    alpha = np.asarray(__import__("zarr").open_array(out / "ihc" / "0")[3])
    assert alpha[:128, :256].min() == 255 and alpha[128:].max() == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "2 already done" in capsys.readouterr().out


def test_stain_whole_slide_to_ome_tiff_matches_zarr(checkpoint, slide_path, tmp_path):
    tif, zarr_out = tmp_path / "v.ome.tif", tmp_path / "v.zarr"
    assert main(["stain", str(slide_path), "--model", str(checkpoint), "--out", str(tif)]) == 0
    stain_slide(slide_path, checkpoint, zarr_out)
    a = open_slide(tif)
    b = open_slide(zarr_out)
    assert a.pixel_size == pytest.approx(0.5)
    assert len(a.levels) == len(b.levels)
    diff = np.abs(a.levels[0].compute().astype(int) - b.levels[0].compute())
    assert diff.mean() < 3  # JPEG
    assert not (tmp_path / "v.ome.tif.zarr").exists()


def test_region_outside_slide_is_a_clear_error(checkpoint, slide_path, tmp_path, capsys):
    code = main(
        [
            "stain",
            str(slide_path),
            "--model",
            str(checkpoint),
            "--out",
            str(tmp_path / "o.zarr"),
            "--region",
            "400,0,100,100",
        ]
    )
    assert code == 2
    assert "outside" in capsys.readouterr().err


def test_checkpoint_of_wrong_kind_is_refused(slide_path, tmp_path, capsys):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x80\x04K\x01.")  # a pickle, not safetensors
    assert (
        main(["stain", str(slide_path), "--model", str(fake), "--out", str(tmp_path / "o.zarr")])
        == 2
    )
    err = capsys.readouterr().err
    assert "fake.safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(__import__("vstain.weights").weights.shipped_checkpoints()))
def test_shipped_checkpoints_load_and_say_they_are_demo_weights(name, slide_path, tmp_path):
    from vstain.models import read_card
    from vstain.weights import resolve_checkpoint

    path = resolve_checkpoint(name)
    card = read_card(path)
    assert name in (card.architecture, "-".join([card.architecture, *card.markers]))
    assert card.steps > 0
    assert "simulated tissue" in card.notes
    assert card.metrics["heldout"]["images"] > 0
    result = stain_slide(slide_path, name, tmp_path / "o.zarr", region=(0, 0, 100, 100))  # 1 tile
    assert result.computed == 1


def test_stain_diffuser_segments_positive_cells_into_instance_labels(tmp_path):
    import zarr

    from vstain.synth import synth_slide

    path = tmp_path / "he.ome.tif"
    write_ome_tiff(np.asarray(synth_slide("ck818", size=512, seed=11).he), path, pixel_size=0.5)
    options = {"segment": True, "steps": 2, "sampler": "dpm-solver++"}
    out = tmp_path / "o.zarr"
    stain_slide(path, "stain-diffuser", out, region=(140, 140, 100, 100), options=options)
    cells = zarr.open_array(out / "segmentation" / "0", mode="r")[0, 128:256, 128:256]
    assert cells.dtype == np.int64 and len(np.unique(cells)) > 2  # background and cells


def test_keypoints_become_a_raster_the_engine_can_store():
    from vstain.pipeline.outputs import keypoint_raster, rasterised

    points = np.array([[[0.2, 0.4], [3.6, 1.0], [9.0, 2.0], [-1.0, 0.0]]])  # (x, y)
    raster = keypoint_raster(points, 4, 5)
    assert raster.shape == (1, 1, 4, 5) and raster.dtype == np.int32
    assert sorted(zip(*np.nonzero(raster[0, 0]), strict=True)) == [(0, 0), (1, 4)]
    outputs = {"ihc": np.zeros((1, 3, 4, 5)), "keypoints": points}
    assert rasterised(outputs)["keypoints"].shape == (1, 1, 4, 5)
    assert rasterised({"ihc": outputs["ihc"]}).keys() == {"ihc"}


def test_k_stain_keypoints_are_stored_with_the_virtual_ihc(slide_path, tmp_path):
    import zarr

    torch.manual_seed(0)
    model = create("k-stain", "small", tile_size=128, pixel_size=0.5)
    result = stain_slide(slide_path, model, tmp_path / "k.zarr", region=(0, 0, 256, 128))
    assert result.computed == 2
    keypoints = zarr.open_array(tmp_path / "k.zarr" / "keypoints" / "0", mode="r")[0]
    per_tile = [int(keypoints[:128, x : x + 128].sum()) for x in (0, 128)]
    assert all(1 <= n <= model.config["n_keypoints"] for n in per_tile), per_tile


def test_tile_function_gives_diffusion_models_their_window_origins():
    torch.manual_seed(0)
    model = create("stain-diffuser", "small").eval()
    for p in model.parameters():  # zero-initialised output layers: randomise so noise shows
        if not p.detach().any():
            torch.nn.init.normal_(p, 0.0, 0.05)
    fn = load_model(model, "cpu").tile_function({"steps": 2})
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
    out = fn(batch, origins=[(0, 0), (64, 128)])["ihc"].astype(int)  # uint8 from the device
    for i, origin in enumerate([(0, 0), (64, 128)]):
        alone = model.predict(x[i : i + 1], steps=2, origin=origin).ihc
        assert np.abs(out[i : i + 1] - np.rint(alone.numpy() * 255)).max() <= 1
    moved = fn(batch, origins=[(8, 0), (64, 128)])["ihc"].astype(int)
    assert np.abs(moved[0] - out[0]).max() > 1 and np.abs(moved[1] - out[1]).max() <= 1
    pix2pix = load_model(create("pix2pix"), "cpu").tile_function()
    assert pix2pix(batch)["ihc"].shape == (2, 3, 32, 32)  # models without origin: batch only
