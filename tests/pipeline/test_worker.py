"""The staining worker process: the same store as `stain_slide`, cancel, and a killed worker."""

import os
import signal
import time

import numpy as np
import pytest
import zarr

from vstain.errors import CheckpointError
from vstain.pipeline import stain_slide
from vstain.pipeline.worker import (
    Ended,
    JobFailed,
    Opened,
    PartDone,
    StainWorker,
    TileDone,
    WorkerError,
)
from vstain.tiles.store import PENDING

TILE = 128


@pytest.fixture(scope="module")
def worker(checkpoint):
    worker = StainWorker(checkpoint, "cpu", nice=0)
    assert worker.wait_ready(120), worker.load_error
    yield worker
    worker.stop()


def events_until_end(worker, job, timeout=60.0) -> list:
    """Every event of ``job`` until its `Ended` (other jobs' events are dropped)."""
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        got += [e for e in worker.receive() if e.job == job]
        if got and isinstance(got[-1], Ended):
            return got
        time.sleep(0.01)
    raise AssertionError(f"job {job} did not end: {got}")


def arrays(store):
    group = zarr.open_group(store, mode="r")
    return np.asarray(group["done"][:]), np.asarray(zarr.open_array(store / "ihc" / "0", mode="r"))


def test_the_worker_writes_the_store_stain_slide_writes(worker, checkpoint, slide_path, tmp_path):
    region, toward = (100, 50, 250, 200), (200, 150)
    job = worker.submit(
        slide=slide_path,
        store=tmp_path / "worker.zarr",
        parts=((region, toward), (None, None)),
        tile=TILE,
        batch_size=2,
        pixels=("ihc",),
    )
    events = events_until_end(worker, job)
    assert not [e for e in events if isinstance(e, JobFailed)]
    opened = [e for e in events if isinstance(e, Opened)]
    assert [e.part for e in opened] == [0, 1] and opened[0].store == tmp_path / "worker.zarr"
    first_tile = next(i for i, e in enumerate(events) if isinstance(e, TileDone))
    assert events.index(opened[0]) < first_tile, "the store exists before its first tile"
    results = [e.result for e in events if isinstance(e, PartDone)]
    assert results[1].already_done == results[0].total and not results[1].cancelled

    stain_slide(slide_path, checkpoint, tmp_path / "direct.zarr", device="cpu", tile=TILE)
    done, pixels = arrays(tmp_path / "worker.zarr")
    direct_done, direct_pixels = arrays(tmp_path / "direct.zarr")
    np.testing.assert_array_equal(done, direct_done)
    np.testing.assert_array_equal(pixels, direct_pixels)

    tiles = [e for e in events if isinstance(e, TileDone)]
    for event in tiles:  # the pixels sent with each tile are the stored ones
        (level, y, x, block), *_ = event.pixels["ihc"]
        assert level == 0
        np.testing.assert_array_equal(block, pixels[:, y : y + block.shape[1], x : x + TILE])


def test_cancel_stops_at_a_tile_and_the_next_order_resumes(worker, slide_path, tmp_path):
    store = tmp_path / "cancel.zarr"
    order = {"slide": slide_path, "store": store, "parts": ((None, None),), "tile": TILE}
    job = worker.submit(**order, batch_size=1)
    while not [e for e in worker.receive() if isinstance(e, TileDone) and e.job == job]:
        time.sleep(0.005)
    worker.cancel(job)
    start = time.perf_counter()
    events = events_until_end(worker, job)
    assert time.perf_counter() - start < 1.0
    (result,) = [e.result for e in events if isinstance(e, PartDone)]
    assert result.cancelled
    done, _ = arrays(store)
    finished = done != PENDING

    again = worker.submit(**order, batch_size=1)
    events = events_until_end(worker, again)
    (result,) = [e.result for e in events if isinstance(e, PartDone)]
    computed = {e.progress.tile.index for e in events if isinstance(e, TileDone)}
    assert not any(finished[i] for i in computed), "no finished tile was computed again"
    assert result.already_done == finished.sum() and not result.cancelled
    assert (arrays(store)[0] != PENDING).all()


def test_a_killed_worker_leaves_a_store_that_a_new_worker_resumes(checkpoint, slide_path, tmp_path):
    store = tmp_path / "killed.zarr"
    order = {"slide": slide_path, "store": store, "parts": ((None, None),), "tile": TILE}
    worker = StainWorker(checkpoint, "cpu", nice=0)
    assert worker.wait_ready(120)
    job = worker.submit(**order, batch_size=1)
    seen = 0
    while seen < 3:
        seen += len([e for e in worker.receive() if isinstance(e, TileDone) and e.job == job])
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.join(5)
    assert not worker.alive and "killed by signal 9" in worker.stopped_message()
    with pytest.raises(WorkerError, match="stopped unexpectedly"):
        worker.submit(**order, batch_size=1)
    done, pixels = arrays(store)
    for (r, c), state in np.ndenumerate(done):  # a flag never claims a tile not on disk
        if state != PENDING:
            assert pixels[3, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE].min() == 255

    fresh = StainWorker(checkpoint, "cpu", nice=0)
    try:
        assert fresh.wait_ready(120)
        job = fresh.submit(**order, batch_size=1)
        events = events_until_end(fresh, job)
        computed = {e.progress.tile.index for e in events if isinstance(e, TileDone)}
        assert not any(done[i] != PENDING for i in computed)
        assert (arrays(store)[0] != PENDING).all()
    finally:
        fresh.stop()


def test_a_checkpoint_that_does_not_load_fails_each_order_with_its_error(slide_path, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    worker = StainWorker(bad, "cpu", nice=0)
    try:
        assert not worker.wait_ready(120)
        assert isinstance(worker.load_error, CheckpointError), worker.load_error
        job = worker.submit(
            slide=slide_path,
            store=tmp_path / "o.zarr",
            parts=((None, None),),
            tile=TILE,
            batch_size=1,
        )
        (failed, ended) = events_until_end(worker, job)
        assert isinstance(failed.error, CheckpointError) and isinstance(ended, Ended)
        assert not (tmp_path / "o.zarr").exists()
    finally:
        worker.stop()


def test_stop_ends_the_process(checkpoint):
    worker = StainWorker(checkpoint, "cpu", nice=0)
    worker.stop(5)
    assert not worker.alive and worker.exitcode is not None
