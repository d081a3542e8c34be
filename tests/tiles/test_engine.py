import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage

from tests.tiles.conftest import (
    IHC,
    RECEPTIVE_RADIUS,
    ConvModel,
    make_tissue_image,
    whole_image_reference,
)
from vstain.errors import OutputExistsError
from vstain.io import downsample_2x, open_ome_zarr_levels
from vstain.io.slide import Slide
from vstain.tiles import CancelToken, OutputSpec, OutputStore, TileGrid, run_tiles, stain_level
from vstain.tiles.seams import seam_metric
from vstain.tiles.store import BACKGROUND, COMPUTED


def ihc_level(out, level=0) -> np.ndarray:
    """Stored RGBA of the ihc output as (Y, X, 4)."""
    return np.asarray(zarr.open_array(out / "ihc" / str(level), mode="r")[:]).transpose(1, 2, 0)


def test_tiled_output_equals_whole_image_output(slide, model, tmp_path, tissue_image):
    halo = RECEPTIVE_RADIUS + 1
    out = tmp_path / "out.zarr"
    result = stain_level(slide, model, out, specs=[IHC], tile=64, halo=halo, min_tissue=0)
    assert result.computed == result.total == 5 * 7 and not result.cancelled
    got = ihc_level(out)
    ref = whole_image_reference(model, tissue_image, halo).transpose(1, 2, 0)
    assert (got[..., 3] == 255).all()
    diff = np.abs(got[..., :3].astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_feather_removes_intensity_jumps_between_tiles(slide, tmp_path, tissue_image):
    """A model normalising each window by its mean (tile-dependent context) seams when centre-
    cropped; feathered blending hides the jumps (the seam metric of the input image is ~1)."""

    def per_window_normalised(batch):
        return {"ihc": np.clip(0.5 + batch - batch.mean(axis=(2, 3), keepdims=True), 0, 1)}

    seams = {}
    for blend in ("crop", "feather"):
        out = tmp_path / f"{blend}.zarr"
        stain_level(
            slide,
            per_window_normalised,
            out,
            specs=[IHC],
            tile=64,
            halo=16,
            blend=blend,
            min_tissue=0,
        )
        seams[blend] = seam_metric(ihc_level(out)[:, :320, :3], 64)
    print(f"seam metric: input {seam_metric(tissue_image[:, :320], 64):.3f}, {seams}")
    assert seams["crop"] > 1.5
    assert abs(seams["feather"] - seam_metric(tissue_image[:, :320], 64)) < 0.05


def test_feather_with_full_halo_matches_reference(slide, model, tmp_path, tissue_image):
    out = tmp_path / "f.zarr"
    stain_level(
        slide, model, out, specs=[IHC], tile=64, halo=8, blend="feather", band=4, min_tissue=0
    )
    ref = whole_image_reference(model, tissue_image, 8).transpose(1, 2, 0).astype(int)
    assert np.abs(ihc_level(out)[..., :3].astype(int) - ref).max() <= 1


def test_background_tiles_are_written_not_computed(slide, tmp_path):
    model = ConvModel()
    out = tmp_path / "out.zarr"
    result = stain_level(slide, model, out, specs=[IHC], tile=64, halo=4, batch_size=1)
    assert result.background > 0 and result.computed > 0
    assert model.calls == result.computed
    done = OutputStore.open(out).done_map()
    assert (done[:, -1] == BACKGROUND).all()  # the glass column at the right
    got = ihc_level(out)
    assert (got[:, 384:] == 255).all()  # the background tile column: white, opaque


def test_pyramid_levels_equal_downsampled_level0(slide, model, tmp_path):
    out = tmp_path / "out.zarr"
    stain_level(slide, model, out, specs=[IHC], tile=64, halo=4, min_tissue=0)
    levels = open_ome_zarr_levels(out / "ihc")
    assert len(levels) == 2 and max(levels[-1].shape) <= 256
    np.testing.assert_array_equal(levels[1][:], downsample_2x(np.asarray(levels[0][:])))


def test_levels_coarser_than_the_tile_are_rebuilt_at_finish(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    store = OutputStore.create(
        tmp_path / "o.zarr",
        shape=(64, 64),
        tile=8,
        specs=[IHC],
        pixel_size=None,
        settings={},
        n_levels=6,
    )
    grid = TileGrid((64, 64), tile=8)
    result = run_tiles(image, lambda b: {"ihc": b}, store, grid, grid.tiles())
    assert result.computed == 64
    levels = open_ome_zarr_levels(tmp_path / "o.zarr" / "ihc")
    for k in range(1, 6):  # 2, 4, 8 per tile; 16 and 32 by finish()
        np.testing.assert_array_equal(levels[k][:], downsample_2x(np.asarray(levels[k - 1][:])))


def test_cancel_then_resume_equals_uninterrupted(slide, model, tmp_path):
    full = tmp_path / "full.zarr"
    stain_level(slide, model, full, specs=[IHC], tile=64, halo=4, min_tissue=0)
    part = tmp_path / "part.zarr"
    token = CancelToken()

    def stop_after_five(p):
        if p.done >= 5:
            token.cancel()

    first = stain_level(
        slide,
        model,
        part,
        specs=[IHC],
        tile=64,
        halo=4,
        min_tissue=0,
        batch_size=1,
        progress=stop_after_five,
        cancel=token,
    )
    assert first.cancelled and 5 <= first.computed < first.total
    pending = ihc_level(part)[..., 3] == 0
    assert pending.any()  # unfinished tiles stay transparent
    calls = []
    second = stain_level(
        slide,
        lambda b: calls.append(len(b)) or model(b),
        part,
        specs=[IHC],
        tile=64,
        halo=4,
        min_tissue=0,
        resume=True,
    )
    assert second.already_done == first.computed
    assert sum(calls) == first.total - first.computed
    np.testing.assert_array_equal(ihc_level(part), ihc_level(full))


def test_progress_reports_every_tile_and_priority_order(slide, model, tmp_path):
    seen = []
    stain_level(
        slide,
        model,
        tmp_path / "o.zarr",
        specs=[IHC],
        tile=64,
        halo=4,
        min_tissue=0,
        batch_size=1,
        toward=(400, 290),
        progress=seen.append,
    )
    assert [p.done for p in seen] == list(range(1, 36))
    assert all(p.total == 35 for p in seen)
    assert seen[0].tile.index == (4, 6)


def test_existing_output_is_refused_and_settings_must_match(slide, model, tmp_path):
    out = tmp_path / "o.zarr"
    stain_level(slide, model, out, specs=[IHC], tile=64, halo=4, region=(0, 0, 64, 64))
    with pytest.raises(OutputExistsError, match="--resume"):
        stain_level(slide, model, out, specs=[IHC], tile=64, halo=4)
    with pytest.raises(OutputExistsError, match="halo"):
        stain_level(slide, model, out, specs=[IHC], tile=64, halo=6, resume=True)
    again = stain_level(slide, model, out, specs=[IHC], tile=64, halo=4, overwrite=True)
    assert again.already_done == 0


def test_error_in_model_propagates_and_stops_threads(slide, tmp_path):
    def broken(batch):
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        stain_level(slide, broken, tmp_path / "o.zarr", specs=[IHC], tile=64, halo=4, min_tissue=0)


def test_batch_functions_with_origins_get_each_window_position(tmp_path):
    image = np.zeros((40, 56, 3), np.uint8)
    store = OutputStore.create(
        tmp_path / "o.zarr", shape=(40, 56), tile=16, specs=[IHC], pixel_size=None, settings={}
    )
    grid = TileGrid((40, 56), tile=16, halo=4)
    seen = []

    def fn(batch, origins):
        seen.extend(origins)
        return {"ihc": batch}

    run_tiles(image, fn, store, grid, grid.tiles(), batch_size=3)
    assert sorted(seen) == sorted((t.window[1], t.window[0]) for t in grid.tiles())
    assert (-4, -4) in seen  # the first window starts in the mirror-padded border


def test_scalar_label_and_instance_outputs(slide, tmp_path):
    specs = [
        OutputSpec("uncertainty", "scalar", 1, background=0.0),
        OutputSpec("segmentation", "labels", 1, background=0),
        OutputSpec("cells", "instances", 1, background=0),
    ]

    def fn(batch):
        gray = batch.mean(axis=1, keepdims=True)
        cells = np.stack([ndimage.label(g[0] < 0.6)[0][None] for g in gray])  # ids 1.. per window
        return {"uncertainty": gray, "segmentation": (gray > 0.5).astype(np.int32), "cells": cells}

    out = tmp_path / "o.zarr"
    stain_level(slide, fn, out, specs=specs, tile=64, halo=0)
    unc = zarr.open_array(out / "uncertainty" / "0", mode="r")
    seg = zarr.open_array(out / "segmentation" / "0", mode="r")
    cells = zarr.open_array(out / "cells" / "0", mode="r")[0]
    assert unc.dtype == np.float32 and seg.dtype == np.int32 and cells.dtype == np.int64
    assert not np.isnan(unc[:]).any()
    done = OutputStore.open(out).done_map()
    assert (done == COMPUTED).any() and set(np.unique(seg[:])) <= {0, 1}
    # every window numbered its objects from 1; stored, they are many (tests/tiles/test_instances)
    assert len(np.unique(cells[:])) > 16


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.tiles.conftest import IHC, ConvModel, make_tissue_image
import dask.array as da
from vstain.io.slide import Slide
from vstain.tiles import stain_level
import vstain.tiles.store
vstain.tiles.store.FLUSH_MAX_TILES = 8  # flush by count, whatever the machine's speed
model = ConvModel()
def slow(batch):
    time.sleep(0.05)
    return model(batch)
level = da.from_array(make_tissue_image(), chunks=64)
slide = Slide(__import__("pathlib").Path("x.png"), [level], 0.5)
def announce(p):
    if p.done == 20:
        print("ready", flush=True)
stain_level(slide, slow, {out!r}, specs=[IHC], tile=64, halo=4, min_tissue=0, batch_size=1,
            resume=True, progress=announce)
print("finished", flush=True)
"""


@pytest.mark.slow
def test_killed_process_resumes_to_identical_output(slide, model, tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    full = tmp_path / "full.zarr"
    stain_level(slide, model, full, specs=[IHC], tile=64, halo=4, min_tissue=0)
    out = tmp_path / "killed.zarr"
    root = str(Path(__file__).resolve().parents[2])
    script = KILL_SCRIPT.format(root=root, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = OutputStore.open(out).done_map()
    # done flags lag the writes by less than FLUSH_MAX_TILES (8 here): 20 written, 13 flagged
    assert 13 <= (done == COMPUTED).sum() < done.size
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "finished" in finished.stdout, finished.stderr
    np.testing.assert_array_equal(ihc_level(out), ihc_level(full))


class StridedModel(torch.nn.Module):
    """Downsample by 2 and back: equivariant only to even shifts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.Tanh(),
            torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1),
            torch.nn.Sigmoid(),
        )

    @torch.inference_mode()
    def __call__(self, batch):
        return {"ihc": self.net(torch.from_numpy(batch))}


def test_aligned_windows_make_strided_models_tile_exactly(tmp_path):
    image = make_tissue_image(130, 301)  # odd width: the last window is shifted by an odd amount
    slide = Slide(tmp_path / "x.png", [da.from_array(image, chunks=64)], 0.5)
    model = StridedModel()
    halo = 8
    padded = np.pad(image, ((halo, halo + 2), (halo, halo + 1), (0, 0)), mode="symmetric")
    x = torch.from_numpy(padded.astype(np.float32).transpose(2, 0, 1)[None] / 255)
    ref = model.net(x)[0, :, halo : halo + 130, halo : halo + 301].detach().numpy()
    ref = np.clip(np.rint(ref * 255), 0, 255).transpose(1, 2, 0)
    errors = {}
    for align in (1, 2):
        out = tmp_path / f"a{align}.zarr"
        stain_level(slide, model, out, specs=[IHC], tile=64, halo=halo, align=align, min_tissue=0)
        errors[align] = np.abs(ihc_level(out)[..., :3].astype(int) - ref).max()
    assert errors[2] <= 1 < errors[1]


def test_uint8_predictor_stores_what_the_float_path_stores(slide, tmp_path):
    """Windows as uint8 and the IHC rounded on the device (`Predictor`, submitted one batch
    ahead) give the same store as float batches; feathering the rounded IHC stays within 1/255."""
    from vstain.models import create
    from vstain.models.device import Predictor, predict_batch, prepare_model

    cpu = torch.device("cpu")
    model = prepare_model(create("pix2pix"), cpu)

    def float_fn(batch):
        return predict_batch(model, batch, cpu)

    stored = {}
    for blend in ("crop", "feather"):
        for name, fn in (("float", float_fn), ("uint8", Predictor(model, cpu))):
            out = tmp_path / f"{name}-{blend}.zarr"
            stain_level(
                slide,
                fn,
                out,
                specs=[IHC],
                tile=64,
                halo=16,
                align=model.size_multiple,
                blend=blend,
                batch_size=3,
                min_tissue=0,
            )
            stored[name, blend] = ihc_level(out).astype(int)
    np.testing.assert_array_equal(stored["float", "crop"], stored["uint8", "crop"])
    assert np.abs(stored["float", "feather"] - stored["uint8", "feather"]).max() <= 1


def test_thread_pools_do_not_change_the_store(slide, model, tmp_path):
    """One reader and one writer, or several of each: the same chunks, pyramid and done-map."""
    results = []
    for threads in (1, 3):
        out = tmp_path / f"t{threads}.zarr"
        store = OutputStore.create(
            out, shape=slide.shape, tile=64, specs=[IHC], pixel_size=None, settings={}
        )
        grid = TileGrid(slide.shape, tile=64, halo=4)
        run_tiles(
            slide.levels[0],
            model,
            store,
            grid,
            grid.tiles(),
            is_tissue=lambda t: t.index[1] < 6,
            readers=threads,
            writers=threads,
        )
        results.append([ihc_level(out, k) for k in range(2)] + [OutputStore.open(out).done_map()])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


class Submitting:
    """A batch function with ``submit`` that computes at once (as `Predictor` does on a CPU);
    ``calls`` records each submit and each collect."""

    def __init__(self, model, runs_ahead: bool):
        self.model, self.runs_ahead, self.calls = model, runs_ahead, []

    def __call__(self, batch):
        return self.model(batch)

    def submit(self, batch):
        n = sum(1 for kind, _ in self.calls if kind == "submit")
        self.calls.append(("submit", n))
        outputs = self.model(batch)
        return lambda: self.calls.append(("collect", n)) or outputs


@pytest.mark.parametrize("runs_ahead", [True, False])
def test_a_function_that_computes_on_submit_does_not_hold_tiles_back(
    slide, model, tmp_path, runs_ahead
):
    fn = Submitting(model, runs_ahead)
    stain_level(slide, fn, tmp_path / "o.zarr", specs=[IHC], tile=64, batch_size=1, min_tissue=0)
    kinds = [kind for kind, _ in fn.calls[:4]]
    if runs_ahead:  # the next batch is sent before this one is collected (CUDA streams)
        assert kinds == ["submit", "submit", "collect", "submit"]
    else:  # each tile is collected, so written, before the next one is computed
        assert kinds == ["submit", "collect", "submit", "collect"]
