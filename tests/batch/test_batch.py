"""Batch staining on a dask LocalCluster of 2 single-threaded worker processes: equality with the
single-process engine, resume after a killed job, a corrupt slide, a killed worker."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from tests.tiles.conftest import make_tissue_image
from vstain.batch import SUMMARY_NAME, stain_slides
from vstain.batch.plan import Block, SlidePlan, check_block, interleave, pending_blocks
from vstain.batch.worker import worker_device
from vstain.cli import main
from vstain.errors import OutputExistsError, VstainError
from vstain.io import write_ome_tiff
from vstain.models import create, model_configs, save_checkpoint
from vstain.pipeline import stain_slide
from vstain.tiles import OutputSpec, OutputStore, TileGrid, run_tiles
from vstain.tiles.store import PENDING

BLOCK = 2  # 2 x 2 tiles of 128 px: 6 and 12 blocks for the two slides
SHAPES = {"a": (512, 640), "b": (768, 1000)}  # b: 3 levels, the coarsest built after the blocks


def zarr_name(path: Path) -> str:
    return path.name.split(".")[0] + ".zarr"


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an output store (all pyramid levels and the done-map) by name."""
    group = zarr.open_group(path, mode="r")
    names = [f"ihc/{k}" for k in group["ihc"].array_keys()] + ["done"]
    return {name: np.asarray(group[name][...]) for name in names}


def assert_same_store(a: Path, b: Path) -> None:
    got, want = store_arrays(a), store_arrays(b)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny pix2pix checkpoint, two slides and their single-process outputs."""
    root = tmp_path_factory.mktemp("batch")
    torch.manual_seed(0)
    config = {**model_configs("pix2pix")["small"], "ngf": 8, "n_blocks": 1}
    model = create("pix2pix", config, tile_size=128, markers=["ck818"], pixel_size=0.5)
    checkpoint = save_checkpoint(model, root / "tiny.safetensors")
    slides = []
    for i, (name, (h, w)) in enumerate(SHAPES.items()):
        image = make_tissue_image(h, w)
        path = root / f"{name}.ome.tif"
        write_ome_tiff(image[::-1] if i else image, path, pixel_size=0.5, compression="deflate")
        stain_slide(path, checkpoint, root / "ref" / zarr_name(path))
        slides.append(path)
    return {"checkpoint": checkpoint, "slides": slides, "ref": root / "ref"}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


def run(data, out, cluster, **options):
    return stain_slides(
        data["slides"],
        data["checkpoint"],
        out,
        scheduler=cluster.scheduler_address,
        block=BLOCK,
        **options,
    )


def test_two_workers_equal_single_process(data, cluster, tmp_path):
    seen = []
    summary = run(data, tmp_path, cluster, progress=seen.append)
    assert [s.status for s in summary.slides] == ["done", "done"]
    assert [s.tiles for s in summary.slides] == [20, 48]
    assert [s.blocks_done for s in summary.slides] == [6, 12]
    assert summary.tiles == 68 and summary.workers == 2 and not summary.failures
    assert [p.done for p in seen] == list(range(19)) and seen[-1].total == 18
    for path in data["slides"]:
        assert_same_store(tmp_path / zarr_name(path), data["ref"] / zarr_name(path))
    written = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert written["tiles"] == 68 and written["failures"] == []
    assert written["tiles_per_second"] == pytest.approx(summary.tiles_per_second)
    with pytest.raises(OutputExistsError, match="--resume"):
        run(data, tmp_path, cluster)


def unfinished_blocks(out: Path, slides: list[Path]) -> list[int]:
    """Blocks with pending tiles per slide (-1: store not created yet)."""
    stores = [out / zarr_name(s) / "done" for s in slides]
    return [
        len(pending_blocks(0, np.asarray(zarr.open_array(d, mode="r")[...]), BLOCK))
        if (d / "zarr.json").exists()
        else -1
        for d in stores
    ]


@pytest.mark.slow  # 21-45 s here: a second LocalCluster starts in the killed subprocess
def test_killed_job_resumes_only_unfinished_blocks(data, cluster, tmp_path):
    command = [sys.executable, "-m", "vstain.cli", "batch", *map(str, data["slides"])]
    command += ["--model", str(data["checkpoint"]), "--out", str(tmp_path), "--block", "2"]
    proc = subprocess.Popen(
        [*command, "--workers", "1"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            left = unfinished_blocks(tmp_path, data["slides"])
            if -1 not in left and sum(left) <= 16:  # at least two of the 18 blocks finished
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its worker processes
        proc.wait()
    left = unfinished_blocks(tmp_path, data["slides"])
    assert 0 < sum(left) <= 16, left
    summary = run(data, tmp_path, cluster, resume=True)
    assert [s.blocks for s in summary.slides] == left
    assert [s.blocks_done for s in summary.slides] == left
    for report in summary.slides:
        assert report.computed + report.background + report.already_done == report.tiles
    for path in data["slides"]:
        assert_same_store(tmp_path / zarr_name(path), data["ref"] / zarr_name(path))


def damage_tile(path: Path, index: int) -> None:
    """Overwrite one compressed tile of level 0 with garbage."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, size = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * (size // 256) + b"\0" * (size % 256))


def test_corrupt_slides_are_reported_and_the_rest_go_on(data, cluster, tmp_path, capsys):
    garbage = tmp_path / "garbage.ome.tif"
    garbage.write_bytes(b"II*\0" + os.urandom(2000))
    damaged = tmp_path / "damaged.ome.tif"
    image = make_tissue_image(256, 384)
    write_ome_tiff(image, damaged, pixel_size=0.5, compression="deflate", tile=128)
    damage_tile(damaged, 5)
    good = data["slides"][0]
    out = tmp_path / "out"
    args = ["batch", str(garbage), str(good), str(damaged), "--model", str(data["checkpoint"])]
    args += ["--out", str(out), "--scheduler", cluster.scheduler_address, "--block", "2"]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "1 of 3 slides done" in captured.out
    assert "dask dashboard: " in captured.out
    assert f"failed: {garbage}" in captured.err and f"failed: {damaged}" in captured.err
    written = json.loads((out / SUMMARY_NAME).read_text())
    assert [s["status"] for s in written["slides"]] == ["failed", "done", "failed"]
    assert [f["slide"] for f in written["failures"]] == [str(garbage), str(damaged)]
    # the damaged tile is met when the plan reads the slide's tissue and glass: one line
    assert all("\n" not in f["error"] and f["error"] for f in written["failures"])
    assert_same_store(out / zarr_name(good), data["ref"] / zarr_name(good))


def test_concurrent_writers_leave_shared_levels_to_build_levels(tmp_path):
    """The store hook: blocks of 2 x 2 tiles written by separate writers equal one writer."""
    image = np.random.default_rng(0).integers(0, 255, (128, 96, 3), dtype=np.uint8)
    spec = OutputSpec("ihc")

    def fn(b):
        return {"ihc": b}

    grid = TileGrid((128, 96), tile=8)
    options = {"shape": (128, 96), "tile": 8, "specs": [spec], "pixel_size": None, "settings": {}}
    one = OutputStore.create(tmp_path / "one.zarr", n_levels=5, **options)
    run_tiles(image, fn, one, grid, grid.tiles())
    OutputStore.create(tmp_path / "many.zarr", n_levels=5, done_block=2, **options)
    blocks = pending_blocks(0, np.zeros(grid.grid_shape, np.uint8), 2)
    for block in blocks[::-1]:  # each block on its own store handle, as on its own worker
        store = OutputStore.open(tmp_path / "many.zarr", concurrent=True)
        assert store.shared_factor == 2
        run_tiles(image, fn, store, grid, [grid.tile_at(r, c) for r, c in block.indices])
    level2 = np.asarray(zarr.open_array(tmp_path / "many.zarr" / "ihc" / "2")[...])
    assert (level2[3] == 0).all()  # 4 x 4 downsampling spans blocks: left to build_levels
    OutputStore.open(tmp_path / "many.zarr", concurrent=True).build_levels()
    assert_same_store(tmp_path / "many.zarr", tmp_path / "one.zarr")


def test_blocks_are_interleaved_and_only_pending_ones_planned():
    done = np.ones((4, 5), np.uint8)
    done[3, 4] = PENDING
    assert pending_blocks(0, done, 2) == [Block(0, (2, 4), (4, 5))]

    def plan(i, n):
        blocks = [Block(i, (k, k + 1), (0, 1)) for k in range(n)]
        return SlidePlan(None, Path(), None, blocks, 0, 0, False)

    order = [(b.slide, b.rows[0]) for b in interleave([plan(0, 3), plan(1, 1), plan(2, 2)])]
    assert order == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_block_size_and_gpu_choice():
    assert check_block(8) == 8
    with pytest.raises(VstainError, match="power of two"):
        check_block(6)
    assert worker_device("auto", 3, 2) == "cuda:1"
    assert worker_device("auto", 3, 1) == "auto"
    assert worker_device("cpu", 3, 2) == "cpu"


def test_each_local_worker_loads_the_model_on_its_own_gpu(monkeypatch):
    """`ModelPlugin.setup` on local workers 0..4 with 2 GPUs visible: cuda:0, 1, 0, 1, 0 (round
    robin); a device named by the user, or a worker not numbered by a LocalCluster, keeps it."""
    import torch

    import vstain.pipeline
    from vstain.batch.worker import ModelPlugin

    loaded = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(vstain.pipeline, "load_model", lambda ckpt, device: loaded.append(device))

    class Worker:
        def __init__(self, name):
            self.name = name

    for device in ("auto", "cuda", "cuda:1", "cpu"):
        for name in range(5):
            ModelPlugin("model.safetensors", device, torch_threads=None).setup(Worker(name))
    ModelPlugin("model.safetensors", "auto", torch_threads=None).setup(Worker("tcp://a:1"))
    assert loaded[:10] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"] * 2
    assert loaded[10:] == ["cuda:1"] * 5 + ["cpu"] * 5 + ["auto"]


def test_killed_worker_mid_run_completes_identically(data, cluster, tmp_path):
    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one(p):
        if p.done >= 3 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(p.done)

    summary = run(data, tmp_path, cluster, progress=kill_one)
    assert killed and killed[0] < 18
    assert [s.status for s in summary.slides] == ["done", "done"] and not summary.failures
    for path in data["slides"]:
        assert_same_store(tmp_path / zarr_name(path), data["ref"] / zarr_name(path))


def test_predict_options_reach_every_worker(data, cluster, tmp_path):
    from vstain.errors import ModelError

    torch.manual_seed(0)
    model = create("asp-dgrank", tile_size=128, markers=["ck818"], pixel_size=0.5)
    checkpoint = save_checkpoint(model, tmp_path / "asp.safetensors")
    slide = data["slides"][0]
    stain_slide(slide, checkpoint, tmp_path / "ref" / zarr_name(slide), options={"tta": 2})
    one = {**data, "slides": [slide], "checkpoint": checkpoint}
    summary = run(one, tmp_path / "out", cluster, predict_options={"tta": 2})
    assert summary.slides[0].status == "done"
    assert_same_store(tmp_path / "out" / zarr_name(slide), tmp_path / "ref" / zarr_name(slide))
    settings = OutputStore.open(tmp_path / "out" / zarr_name(slide)).settings
    assert settings["model"]["options"] == {"tta": 2}
    with pytest.raises(ModelError, match="does not take the options"):
        run(data, tmp_path / "bad", cluster, predict_options={"steps": 5})
