"""The Virtual stain widget in a real napari viewer (runs under Xvfb)."""

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from napari.layers import Labels
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.napari.conftest import (
    PIXEL_SIZE,
    SLIDE_SIZE,
    TILE,
    docked_stain_widget,
    tiny_checkpoint,
)
from vstain.cli import main
from vstain.napari.checkpoint_picker import LOAD_CHECKPOINT
from vstain.napari.model_choice import UNTRAINED
from vstain.napari.stain_job import StainJob
from vstain.napari.stain_widget import VirtualStainWidget
from vstain.pipeline import stain_slide
from vstain.pipeline.worker import WorkerError
from vstain.tiles.store import BACKGROUND, COMPUTED, PENDING

pytestmark = pytest.mark.gui
GRID = SLIDE_SIZE // TILE
#: A job's wait: it includes starting a staining process (importing torch: 5-20 s on a busy
#: machine) when a test chooses a model.
WAIT_MS = 240_000


@pytest.fixture
def jobs(monkeypatch):
    """Every StainJob the widget starts, in order; each records its tiles in ``tiles``."""
    started = []

    class Recorded(StainJob):
        def start(self):
            self.tiles = []
            started.append(self)
            return super().start()

        def _on_progress(self, progress):
            self.tiles.append(progress.tile)
            super()._on_progress(progress)

    monkeypatch.setattr("vstain.napari.stain_widget.StainJob", Recorded)
    return started


@pytest.fixture
def stain(make_napari_viewer, slide_path, checkpoint, tmp_path):
    """(viewer, H&E layer, widget) with the tiny checkpoint loaded, stores in tmp_path."""
    return docked_stain_widget(make_napari_viewer, slide_path, checkpoint, tmp_path)


def wait_idle(qtbot, widget, timeout=WAIT_MS):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def output_layer(viewer):
    (layer,) = [layer for layer in viewer.layers if "vstain_store" in layer.metadata]
    return layer


def done_map(layer) -> np.ndarray:
    return np.asarray(zarr.open_group(layer.metadata["vstain_store"], mode="r")["done"][:])


def look_at(viewer, x: float, y: float, half: float) -> tuple[float, float]:
    """Centre the camera on slide pixel (x, y), showing about ``half`` px each side along the
    longer canvas side; returns the half extents (hy, hx) in px actually shown."""
    camera = viewer.scene.camera
    box = np.asarray(viewer.canvas.viewbox_size(viewer.layers), float)
    camera.center = (y * PIXEL_SIZE, x * PIXEL_SIZE)
    camera.zoom = box.max() / (2 * half * PIXEL_SIZE)
    hy, hx = box / (2 * camera.zoom * PIXEL_SIZE)
    return hy, hx


def covered(layer) -> np.ndarray:
    """World (low, high) corners of the area a layer's pixels cover (extents are pixel centres)."""
    half = np.asarray(layer.scale) / 2
    return np.stack([layer.extent.world[0] - half, layer.extent.world[1] + half])


def tiles_between(lo: float, hi: float) -> set[int]:
    """Grid indices of tiles overlapping [lo, hi] px (clipped to the slide)."""
    return set(range(max(int(lo // TILE), 0), min(int(hi // TILE), GRID - 1) + 1))


def test_widget_shows_the_card_and_warns_for_untrained_weights(stain):
    _, _, widget = stain
    assert "Architecture: pix2pix" in widget.card_label.text()
    assert "Marker: ck818" in widget.card_label.text()
    assert "Training steps: 0" in widget.card_label.text()
    assert widget.warning_label.text() == UNTRAINED
    assert widget.tile_box.value() == TILE
    devices = [widget.device_box.itemData(i) for i in range(widget.device_box.count())]
    assert devices[0] == "auto" and "cpu" in devices


def test_stain_diffuser_cells_become_a_labels_layer(stain, qtbot):
    viewer, _, widget = stain
    widget.model_box.setCurrentText("stain-diffuser")
    form = widget.options_panel.form
    form["segment"].value = True
    form["steps"].value = 2
    form["sampler"].value = "dpm-solver++"
    look_at(viewer, 5.5 * TILE, 3.5 * TILE, half=50)
    widget.stain_view()
    wait_idle(qtbot, widget, timeout=2 * WAIT_MS)
    (cells,) = [layer for layer in viewer.layers if isinstance(layer, Labels)]
    assert cells.name == "stain-diffuser ck818 segmentation"
    ids = np.asarray(cells.data[0] if cells.multiscale else cells.data)
    assert ids.dtype == np.int64 and len(np.unique(ids)) > 2  # background and cells


def test_stain_view_gives_an_aligned_layer_filled_where_the_view_is(stain, qtbot, jobs):
    viewer, he, widget = stain
    cx, cy = 5.5 * TILE + 7, 3.5 * TILE + 5
    hy, hx = look_at(viewer, cx, cy, half=150)
    widget.stain_view()
    wait_idle(qtbot, widget)

    layer = output_layer(viewer)
    assert layer.name == "tiny ck818 virtual IHC"
    assert layer.rgb and layer.multiscale
    np.testing.assert_allclose(layer.scale, he.scale)
    np.testing.assert_allclose(layer.translate, he.translate)
    assert [str(u) for u in layer.units] == [str(u) for u in he.units]

    done = done_map(layer)
    rows_in = tiles_between(cy - hy + 1, cy + hy - 1)
    cols_in = tiles_between(cx - hx + 1, cx + hx - 1)
    rows_out = set(range(GRID)) - tiles_between(cy - hy - 1, cy + hy + 1)
    cols_out = set(range(GRID)) - tiles_between(cx - hx - 1, cx + hx + 1)
    assert all(done[r, c] != PENDING for r in rows_in for c in cols_in)
    assert all(done[r, :].max() == PENDING for r in rows_out)
    assert all(done[:, c].max() == PENDING for c in cols_out)
    assert (done == COMPUTED).sum() >= 2, "the view shows tissue"
    first = next(t for t in jobs[0].tiles if done[t.index] == COMPUTED)
    assert first.index == (int(cy // TILE), int(cx // TILE)), "the view centre comes first"

    pixels = np.asarray(layer.data[0])
    for (r, c), state in np.ndenumerate(done):
        tile = pixels[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        if state == PENDING:
            assert tile[..., 3].max() == 0
        else:
            assert tile[..., 3].min() == 255
        if state == BACKGROUND:
            assert tile[..., :3].min() == 255
        if state == COMPUTED:  # the model's output, not white glass
            assert tile[..., :3].mean() < 250
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == (done != 0).sum()


@pytest.fixture
def coarse(stain, tmp_path):
    """The stain fixture with a model at twice the slide's pixel size (it stains level 1)."""
    path = tiny_checkpoint(tmp_path / "coarse.safetensors", pixel_size=2 * PIXEL_SIZE)
    assert stain[2].load_checkpoint(path)
    return stain


def test_a_coarser_model_stains_the_matching_level_in_place(coarse, qtbot):
    viewer, he, widget = coarse
    look_at(viewer, SLIDE_SIZE / 2, SLIDE_SIZE / 2, half=SLIDE_SIZE)
    widget.stain_view()
    wait_idle(qtbot, widget)
    layer = output_layer(viewer)
    assert layer.level_shapes[0][:2].tolist() == [SLIDE_SIZE // 2, SLIDE_SIZE // 2]
    np.testing.assert_allclose(layer.scale, 2 * np.asarray(he.scale))
    np.testing.assert_allclose(covered(layer), covered(he))
    assert (done_map(layer) != PENDING).all()


def test_a_coarser_model_starts_at_the_view_centre(coarse, qtbot, jobs):
    viewer, _, widget = coarse
    look_at(viewer, 2.5 * 2 * TILE, 1.5 * 2 * TILE, half=SLIDE_SIZE)  # level-1 tile (1, 2)
    widget.stain_view()
    wait_idle(qtbot, widget)
    done = done_map(output_layer(viewer))
    assert done[1, 2] == COMPUTED
    first = next(t for t in jobs[0].tiles if done[t.index] == COMPUTED)
    assert first.index == (1, 2)


def test_cancel_stops_within_a_second_and_the_store_resumes(stain, qtbot, notes):
    viewer, _, widget = stain
    widget.batch_box.setValue(1)
    widget.stain_whole_slide()
    job = widget.runner.job
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.done >= 3, timeout=WAIT_MS)
    tile_seconds = 1 / job.progress.tiles_per_second  # grows with the machine's load
    start = time.perf_counter()
    widget.cancel()
    assert job.wait(5 + tile_seconds)
    assert time.perf_counter() - start < 1.0 + tile_seconds, "within a second of its tile"
    wait_idle(qtbot, widget)
    assert "Cancelled" in widget.status_label.text()
    assert ("info", widget.status_label.text()) in notes

    layer = output_layer(viewer)
    done = done_map(layer)
    assert 0 < (done != PENDING).sum() < done.size
    alpha = np.asarray(layer.data[0][..., 3])
    for (r, c), state in np.ndenumerate(done):  # consistent: a flag never claims a missing tile
        if state != PENDING:
            assert alpha[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE].min() == 255
    first = (done != PENDING).sum()

    widget.stain_whole_slide()
    wait_idle(qtbot, widget)
    assert (done_map(layer) != PENDING).all()
    assert f"{first} already done" in widget.status_label.text()
    assert np.asarray(layer.data[0][..., 3]).min() == 255


def test_selection_stains_the_rectangles_only(stain, qtbot, notes):
    viewer, _, widget = stain
    rect = np.array([[300, 130], [300, 250], [420, 250], [420, 130]]) * PIXEL_SIZE  # (y, x) µm
    ellipse = np.array([[700, 700], [700, 800], [800, 800], [800, 700]]) * PIXEL_SIZE
    viewer.add_shapes([rect, ellipse], shape_type=["rectangle", "ellipse"], name="regions")
    widget.stain_selection()
    wait_idle(qtbot, widget)
    done = done_map(output_layer(viewer))
    expected = np.zeros_like(done, bool)
    expected[2:4, 1:2] = True  # y 300-420 -> rows 2, 3; x 130-250 -> col 1
    np.testing.assert_array_equal(done != PENDING, expected)
    assert ("warning", "1 shapes of 'regions' are not rectangles and were left out.") in notes


def test_auto_restains_once_the_camera_rests_and_cancels_stale_work(stain, qtbot, jobs):
    viewer, _, widget = stain
    widget.batch_box.setValue(1)
    look_at(viewer, 1.5 * TILE, 1.5 * TILE, half=40)
    widget.auto_box.setChecked(True)  # stains the view at once
    wait_idle(qtbot, widget)
    layer = output_layer(viewer)
    assert len(jobs) == 1 and done_map(layer)[1, 1] != PENDING

    look_at(viewer, SLIDE_SIZE / 2, SLIDE_SIZE / 2, half=SLIDE_SIZE)  # the whole slide in view
    qtbot.waitUntil(lambda: len(jobs) == 2 and jobs[1].progress is not None, timeout=10_000)
    look_at(viewer, 6.5 * TILE, 4.5 * TILE, half=40)  # moved on: the big view is stale
    look_at(viewer, 6.5 * TILE, 6.5 * TILE, half=40)  # and on again, before the delay ended
    wait_idle(qtbot, widget)
    assert len(jobs) == 3, "one job for the two moves"
    assert jobs[1].cancelled and not jobs[2].cancelled
    done = done_map(layer)
    assert done[6, 6] != PENDING and (done == PENDING).any()

    widget.auto_box.setChecked(False)
    look_at(viewer, 1.5 * TILE, 6.5 * TILE, half=40)
    qtbot.wait(600)
    assert len(jobs) == 3 and not widget.busy


def test_bad_file_and_wrong_checkpoint_are_notifications(
    stain, qtbot, notes, tmp_path, monkeypatch
):
    viewer, _, widget = stain
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(
        "vstain.napari.checkpoint_picker.QFileDialog.getOpenFileName",
        lambda *a, **k: (str(bad), ""),
    )
    chosen = widget.model_box.currentIndex()
    load = widget.model_box.findText(LOAD_CHECKPOINT)
    widget.model_box.setCurrentIndex(load)
    widget.model_box.activated.emit(load)
    assert notes[-1][0] == "error" and "notes.safetensors" in notes[-1][1]
    assert widget.model_box.currentIndex() == chosen

    source = Path(widget.checkpoint)
    with safe_open(source, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    tensors.pop(sorted(tensors)[0])
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, wrong, metadata=metadata)
    assert widget.load_checkpoint(wrong)  # its card reads fine
    widget.stain_view()
    wait_idle(qtbot, widget)
    assert notes[-1][0] == "error" and "wrong.safetensors does not hold weights" in notes[-1][1]
    assert "Failed" in widget.status_label.text()
    assert not [layer for layer in viewer.layers if "vstain_store" in layer.metadata]

    widget.load_checkpoint(source)  # napari and the widget still work
    widget.stain_view()
    wait_idle(qtbot, widget)
    assert output_layer(viewer).name == "tiny ck818 virtual IHC"


def test_layer_without_a_file_is_a_notification(make_napari_viewer, checkpoint, notes):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="in memory")
    widget = VirtualStainWidget(viewer)
    assert widget.load_checkpoint(checkpoint)
    widget.stain_view()
    assert not widget.busy
    assert notes[-1][0] == "error" and "'in memory' was not opened from a file" in notes[-1][1]


def assert_consistent(store) -> np.ndarray:
    """The store's done map, after checking that every flag has its pixels and no pixel of a
    pending tile was written."""
    done = np.asarray(zarr.open_group(store, mode="r")["done"][:])
    alpha = np.asarray(zarr.open_array(store / "ihc" / "0", mode="r")[3])
    for (r, c), state in np.ndenumerate(done):
        tile = alpha[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        if state != PENDING:
            assert tile.min() == 255
    return done


def resumes_without_recomputing(widget, qtbot, jobs, done: np.ndarray) -> None:
    """Stain the whole slide again: only tiles pending in ``done`` are computed, all end done."""
    widget.stain_whole_slide()
    wait_idle(qtbot, widget)
    job = jobs[-1]
    assert job.error is None and not job.cancelled
    assert not [t.index for t in job.tiles if done[t.index] != PENDING]
    assert f"{(done != PENDING).sum()} already done" in widget.status_label.text()
    assert (assert_consistent(job.store) != PENDING).all()


def test_closing_napari_stops_the_job_and_a_new_viewer_resumes_it(
    stain, qtbot, notes, jobs, make_napari_viewer, slide_path, checkpoint, tmp_path
):
    viewer, _, widget = stain
    widget.batch_box.setValue(1)
    widget.stain_whole_slide()
    job = widget.runner.job
    qtbot.waitUntil(lambda: job.progress is not None, timeout=WAIT_MS)
    store, worker = job.store, job.worker
    viewer.close()  # waits at most a second for the job
    assert job.finished and job.cancelled and job.error is None
    worker.process.join(60)
    assert not worker.alive, "closing napari ends the staining process"
    assert notes[-1][0] == "info" and notes[-1][1].startswith("napari closed: staining stopped")
    done = assert_consistent(store)
    assert 0 < (done != PENDING).sum() < done.size

    _, _, widget = docked_stain_widget(make_napari_viewer, slide_path, checkpoint, tmp_path)
    resumes_without_recomputing(widget, qtbot, jobs, done)


def test_a_killed_staining_process_is_a_notification_and_the_next_action_resumes(
    stain, qtbot, notes, jobs, slide_path, checkpoint, tmp_path
):
    _, _, widget = stain
    widget.batch_box.setValue(1)
    widget.stain_whole_slide()
    job = widget.runner.job
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.done >= 3, timeout=WAIT_MS)
    os.kill(job.worker.pid, signal.SIGKILL)
    wait_idle(qtbot, widget)
    assert isinstance(job.error, WorkerError)
    assert notes[-1] == ("error", job.error.args[0]) and "killed by signal 9" in notes[-1][1]
    assert "Failed" in widget.status_label.text()
    done = assert_consistent(job.store)
    assert (done != PENDING).sum() < done.size

    resumes_without_recomputing(widget, qtbot, jobs, done)
    assert jobs[-1].worker is not job.worker, "a new staining process"
    direct = tmp_path / "direct.zarr"
    stain_slide(slide_path, checkpoint, direct, device="cpu", tile=TILE, batch_size=1)
    for name in ("done", "ihc/0"):  # the same store as an uninterrupted run
        np.testing.assert_array_equal(
            np.asarray(zarr.open(jobs[-1].store / name, mode="r")[:]),
            np.asarray(zarr.open(direct / name, mode="r")[:]),
        )


def test_the_manifest_widget_docks_and_side_by_side_is_grid_mode(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-vstain", "Virtual stain")
    assert isinstance(widget, VirtualStainWidget)
    for name in ("H&E", "virtual", "real"):
        viewer.add_image(np.zeros((8, 8, 3), np.uint8), name=name)
    widget.side_button.click()
    assert viewer.canvas.grid.enabled
    assert viewer.canvas.grid.shape == (1, 3)  # no empty pane beside three layers
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="difference")
    assert viewer.canvas.grid.shape == (-1, -1)  # 2 x 2
    viewer.canvas.grid.enabled = False
    assert not widget.side_button.isChecked()


def test_a_tile_the_model_cannot_take_is_the_cli_s_one_line_error(
    stain, qtbot, notes, slide_path, checkpoint, tmp_path, capsys
):
    viewer, _, widget = stain
    widget.tile_box.setValue(130)  # pix2pix-small needs a multiple of 4
    widget.stain_view()
    wait_idle(qtbot, widget)
    out = str(tmp_path / "cli.zarr")
    cli = ["stain", str(slide_path), "--model", str(checkpoint), "--tile", "130", "--out", out]
    assert main(cli) == 2
    message = capsys.readouterr().err.removeprefix("vstain: error: ").strip()
    assert message.startswith("Tile size 130 does not suit tiny.safetensors")
    assert notes[-1] == ("error", message)
    assert not [layer for layer in viewer.layers if "vstain_store" in layer.metadata]
