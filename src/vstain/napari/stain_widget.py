"""The "Virtual stain" dock widget: pick a model and an H&E layer, stain what you look at.

The widget holds no science: it turns clicks into `StainRequest`s, runs one `StainJob` at a time
through its `JobRunner` in the plugin's staining process (started, and its model warmed up, when
a model is chosen), and on the main thread shows progress and refreshes the output layers as
tiles land.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from napari.utils import notifications
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from vstain.errors import RegionError, SlideError, VstainError
from vstain.io import Slide
from vstain.models import ModelError, choose_device, read_card
from vstain.models.device import available_devices
from vstain.models.registry import option_choices, predict_options
from vstain.napari import side_by_side, store_layers
from vstain.napari.checkpoint_picker import CheckpointPicker, checked_card
from vstain.napari.hub import hub
from vstain.napari.import_weights import IMPORT_WEIGHTS, ask_import, run_import
from vstain.napari.job_runner import JobRunner
from vstain.napari.layer_choice import (
    SlideCache,
    fill_box,
    shapes_layers,
    slide_layers,
    slide_path_of,
)
from vstain.napari.model_cache import WORKER
from vstain.napari.model_choice import card_summary, card_warning, layer_prefix
from vstain.napari.navigator import SlideNavigator
from vstain.napari.notify import notify_error
from vstain.napari.option_widgets import OptionsPanel
from vstain.napari.stain_job import StainJob, StainRequest
from vstain.napari.viewport import (
    rectangle_regions,
    region_centre,
    tiles_in_view,
    visible_region,
    visible_world_box,
)
from vstain.napari.wrapping_label import wrapping_label

#: Layers refresh at most this often while tiles land (a refresh of a 1600 x 1000 canvas costs
#: the main thread about 130 ms here with software OpenGL, nearly all of it napari's texture
#: upload and draw; see docs/napari.md).
REFRESH_MS = 200
#: Auto re-stains this long after the camera stops moving.
AUTO_DELAY_MS = 300
#: Tiles per model call: on a CPU one at a time is fastest per tile (and shows the first tile
#: soonest); accelerators gain from batches.
CPU_BATCH, ACCELERATOR_BATCH = 1, 4


def default_batch(device: str) -> int:
    """Default batch size for a device name (see CPU_BATCH)."""
    return CPU_BATCH if choose_device(device).type == "cpu" else ACCELERATOR_BATCH


class VirtualStainWidget(QWidget):
    """Model, device and layer pickers; Stain view / Auto / selection / whole slide; progress."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._slides = SlideCache()
        self._job_layer = None
        self._job_prefix = ""
        self._job_started = 0.0
        self._job: StainJob | None = None
        self._layers: list = []
        self._seen_updates = 0
        self._seen_opened = 0
        self._pending: tuple | None = None  # (request, slide layer, layer name prefix)

        self._build()
        self.runner = JobRunner(self, REFRESH_MS)
        self.runner.closed.connect(self._on_close)
        self._auto_timer = QTimer(self)
        self._auto_timer.setSingleShot(True)
        self._auto_timer.setInterval(AUTO_DELAY_MS)
        self._auto_timer.timeout.connect(self._auto_stain)

        self.import_runner = JobRunner(self)
        self.model_box.add_action(IMPORT_WEIGHTS, self._import_weights)
        self.model_box.checkpoint_changed.connect(self._on_model_changed)
        self.device_box.currentIndexChanged.connect(self._warm_up)
        self.layer_box.currentIndexChanged.connect(self._prepare_slide)
        self._on_model_changed(self.model_box.checkpoint)

        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved):
            event.connect(self._update_layer_boxes)
        self._update_layer_boxes()
        side_by_side.follow(self.viewer)
        self.viewer.canvas.grid.events.enabled.connect(self._sync_side_by_side)
        hub.checkpoint_saved.connect(self.load_checkpoint)

    # ---- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.model_box = CheckpointPicker()
        self.card_label, self.warning_label = wrapping_label(), wrapping_label()
        self.warning_label.setStyleSheet("color: #f0a030; font-weight: bold;")
        self.device_box = QComboBox()
        self._fill_devices()
        self.layer_box = QComboBox()
        self.shapes_box = QComboBox()
        self.tile_box = QSpinBox()
        self.tile_box.setRange(32, 8192)
        self.tile_box.setSingleStep(64)
        self.batch_box = QSpinBox()
        self.batch_box.setRange(1, 256)
        self.options_panel = OptionsPanel()
        self.device_box.currentIndexChanged.connect(
            lambda: self.batch_box.setValue(default_batch(self.device_box.currentData()))
        )
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("next to the slide")
        folder_button = QPushButton("Choose...")
        folder_button.clicked.connect(self._choose_folder)
        folder = QHBoxLayout()
        folder.addWidget(self.folder_edit)
        folder.addWidget(folder_button)

        form = QFormLayout()
        form.addRow("Model", self.model_box)
        form.addRow(self.card_label)
        form.addRow(self.warning_label)
        form.addRow("Device", self.device_box)
        form.addRow("H&&E layer", self.layer_box)
        form.addRow("Tile size", self.tile_box)
        form.addRow("Batch size", self.batch_box)
        form.addRow(self.options_panel)
        form.addRow("Output folder", folder)

        self.view_button = QPushButton("Stain view")
        self.view_button.clicked.connect(self.stain_view)
        self.auto_box = QCheckBox("Auto")
        self.auto_box.setToolTip("Re-stain the view when panning or zooming stops")
        self.auto_box.toggled.connect(self._on_auto_toggled)
        self.selection_button = QPushButton("Stain selection")
        self.selection_button.clicked.connect(self.stain_selection)
        self.slide_button = QPushButton("Stain whole slide")
        self.slide_button.clicked.connect(self.stain_whole_slide)
        self.side_button = QPushButton("Show side by side")
        self.side_button.setCheckable(True)
        self.side_button.toggled.connect(self._set_side_by_side)
        actions = QGridLayout()
        actions.addWidget(self.view_button, 0, 0)
        actions.addWidget(self.auto_box, 0, 1)
        actions.addWidget(self.selection_button, 1, 0)
        actions.addWidget(self.shapes_box, 1, 1)
        actions.addWidget(self.slide_button, 2, 0)
        actions.addWidget(self.side_button, 2, 1)

        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m tiles")
        self.progress_bar.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar)
        progress.addWidget(self.cancel_button)
        self.status_label = wrapping_label("Idle")

        self.navigator = SlideNavigator(self.viewer, self)
        slides = QGroupBox("Slides")
        QVBoxLayout(slides).addWidget(self.navigator)

        layout = QVBoxLayout(self)
        layout.addWidget(slides)
        layout.addLayout(form)
        layout.addLayout(actions)
        layout.addLayout(progress)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

    def _fill_devices(self) -> None:
        """auto, then every device here; cuda / mps listed but disabled when unavailable."""
        available = available_devices()
        self.device_box.addItem("auto", "auto")
        for device in available:
            self.device_box.addItem(device, device)
        for kind in ("cuda", "mps"):
            if not any(d.startswith(kind) for d in available):
                self.device_box.addItem(f"{kind} (not available)", kind)
                item = self.device_box.model().item(self.device_box.count() - 1)
                item.setEnabled(False)

    # ---- model ----------------------------------------------------------------------------------

    def load_checkpoint(self, path: str | Path) -> bool:
        """Add a checkpoint file to the model picker and select it; False (and a notification)
        when it is not a vstain checkpoint."""
        return self.model_box.add(path)

    def _import_weights(self) -> None:
        """Import a public generator in the background; select it when it is saved."""
        files = ask_import(self)
        if files is not None:
            run_import(self.import_runner, *files, self.load_checkpoint)

    def _on_model_changed(self, path: Path | None) -> None:
        self._show_card(None if path is None else checked_card(path))
        self._warm_up()

    def _warm_up(self, index=None) -> None:
        """Start the staining process of the chosen model and device (it loads and warms the
        model up at once, so the first click does not wait for it); a running job keeps its
        process, and the next job starts the new one."""
        if self.has_model and self.view_button.isEnabled() and not self.runner.busy:
            WORKER.get(self.checkpoint, self.device_box.currentData())
            self._prepare_slide()

    def _prepare_slide(self, index=None) -> None:
        """Have the staining process read the chosen slide's tissue mask now, not on the click."""
        layer = self.layer_box.currentData()
        worker = WORKER.worker
        if layer is None or worker is None or "vstain_store" in layer.metadata:
            return
        with contextlib.suppress(VstainError):  # an in-memory layer, or an ended process
            worker.prepare(slide_path_of(layer))

    def _show_card(self, card) -> None:
        if card is None:
            self.card_label.setText("No model: load a checkpoint (.safetensors).")
            self.warning_label.setText("")
            self._set_actions_enabled(False)
            return
        self.card_label.setText(card_summary(card))
        self.warning_label.setText(card_warning(card) or "")
        self.tile_box.setValue(card.tile_size)
        try:
            arch = card.architecture
            choices = option_choices(arch, card.markers)
            self.options_panel.set_options(predict_options(arch), choices)
        except ModelError as e:  # a card of an architecture this vstain does not know
            notify_error(e)
            self.options_panel.set_options({}, {})
        self.batch_box.setValue(default_batch(self.device_box.currentData()))
        self._set_actions_enabled(True)

    def _set_actions_enabled(self, enabled: bool) -> None:
        for button in (self.view_button, self.selection_button, self.slide_button):
            button.setEnabled(enabled)
        self.auto_box.setEnabled(enabled)

    @property
    def has_model(self) -> bool:
        return self.model_box.checkpoint is not None

    @property
    def busy(self) -> bool:
        """True while a job runs or waits to run."""
        return self.runner.busy or self._pending is not None

    @property
    def model_name(self) -> str:
        return self.model_box.name

    @property
    def checkpoint(self) -> Path:
        return self.model_box.checkpoint

    # ---- layers ---------------------------------------------------------------------------------

    def _update_layer_boxes(self, event=None) -> None:
        fill_box(self.layer_box, slide_layers(self.viewer))
        fill_box(self.shapes_box, shapes_layers(self.viewer))

    @property
    def slide_layer(self):
        layer = self.layer_box.currentData()
        if layer is None or layer not in self.viewer.layers:
            raise SlideError("No H&E layer: open a slide (File > Open) and pick it as H&E layer.")
        return layer

    def _slide(self, layer) -> Slide:
        return self._slides.of(layer)

    def _out_dir(self, slide: Slide) -> Path:
        text = self.folder_edit.text().strip()
        return Path(text).expanduser() if text else slide.path.parent

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the virtual stain stores")
        if folder:
            self.folder_edit.setText(folder)

    # ---- actions --------------------------------------------------------------------------------

    def stain_request(self, kind: str, parts, layer) -> StainRequest:
        """What staining ``parts`` of ``layer``'s slide with the chosen model and settings asks
        for (its `store_path` is where the outputs are, or will be)."""
        slide = self._slide(layer)
        return StainRequest(
            kind=kind,
            slide=slide,
            parts=tuple(parts),
            checkpoint=self.checkpoint,
            device=self.device_box.currentData(),
            tile=self.tile_box.value(),
            batch_size=self.batch_box.value(),
            options=self.options_panel.values(),
            out_dir=self._out_dir(slide),
        )

    @property
    def output_prefix(self) -> str:
        """The start of the chosen model's output layer names (``<model> <marker>``)."""
        return layer_prefix(self.checkpoint.stem, read_card(self.checkpoint))

    def _submit(self, kind: str, parts) -> None:
        """Start a job now, or after the running one (a running view job is stale: cancelled)."""
        layer = self.slide_layer
        order = (self.stain_request(kind, parts, layer), layer, self.output_prefix)
        if not self.runner.busy:
            self._start(*order)
            return
        self._pending = order
        if self.runner.job.request.kind == "view" and kind == "view":
            self.runner.cancel()
        else:
            self.status_label.setText("Queued: starts when the running job ends.")

    def _view_centre(self, layer) -> tuple[float, float]:
        low, high = visible_world_box(self.viewer)
        y, x = layer.world_to_data((low + high) / 2)
        return float(x), float(y)

    def stain_view(self) -> None:
        """Stain the tiles in view, nearest the view centre first."""
        try:
            layer = self.slide_layer
            region = visible_region(self.viewer, layer)
            self._submit("view", [(region, self._view_centre(layer))])
        except VstainError as e:
            notify_error(e)

    def stain_selection(self) -> None:
        """Stain the rectangles of the chosen Shapes layer."""
        try:
            shapes = self.shapes_box.currentData()
            if shapes is None or shapes not in self.viewer.layers:
                raise RegionError("No Shapes layer: add one, draw rectangles, and pick it.")
            regions, others = rectangle_regions(shapes, self.slide_layer)
            if not regions:
                raise RegionError(f"Layer {shapes.name!r} has no rectangles: draw some on it.")
            if others:
                notifications.show_warning(
                    f"{others} shapes of {shapes.name!r} are not rectangles and were left out."
                )
            parts = [(region, region_centre(region)) for region in regions]
            self._submit("selection", parts)
        except VstainError as e:
            notify_error(e)

    def stain_whole_slide(self) -> None:
        """Stain every tissue tile of the slide (starting at the view), resumably."""
        try:
            self._submit("slide", [(None, self._view_centre(self.slide_layer))])
        except VstainError as e:
            notify_error(e)

    def cancel(self) -> None:
        """Stop the running job at the next tile (what is done stays done) and drop queued work."""
        self._pending = None
        if self.runner.busy:
            self.runner.cancel()
            self.status_label.setText("Cancelling...")

    def _start(self, request: StainRequest, layer, prefix: str) -> None:
        self._job_layer = layer
        self._job_prefix = prefix
        self._job_started = time.perf_counter()
        self._layers = []
        self._seen_updates = 0
        self._seen_opened = 0
        self.progress_bar.setMaximum(0)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(f"Staining ({request.kind})...")
        worker = WORKER.get(request.checkpoint, request.device)  # a new one if it ended
        self._job = StainJob(request, worker, pixels=store_layers.PIXEL_OUTPUTS)
        self.runner.run(self._job, tick=self._tick, done=self._finish)

    # ---- on the main thread, while the job runs and when it ends ---------------------------------

    def _tick(self, job: StainJob) -> None:
        if job.opened != self._seen_opened:  # the store exists: its layers come before its tiles
            self._seen_opened = job.opened
            self._layers = []
            self._refresh_layers(job)
        updates = job.updates
        if updates != self._seen_updates:
            self._seen_updates = updates
            self._show_progress(job)
            store_layers.paste(self._layers, job.take_shares())
            if not job.finished and self._in_view(job.take_landed(), job.downsample):
                self._refresh_layers(job)

    def _in_view(self, tiles: list, downsample: float) -> bool:
        """Whether any of ``tiles`` shows in the canvas: a refresh costs the main thread tens of
        ms, so tiles landing off screen do not trigger one."""
        try:
            return tiles_in_view(tiles, visible_region(self.viewer, self._job_layer), downsample)
        except RegionError:
            return False

    def _show_progress(self, job: StainJob) -> None:
        p = job.progress
        self.progress_bar.setMaximum(p.total)
        self.progress_bar.setValue(p.done)
        parts = len(job.request.parts)
        where = f" (rectangle {job.part + 1} of {parts})" if parts > 1 else ""
        self.status_label.setText(f"{p.tiles_per_second:.1f} tiles/s{where}")

    def _refresh_layers(self, job: StainJob, final: bool = False) -> None:
        if job.store is None or not job.store.exists() or self._job_layer not in self.viewer.layers:
            return
        if not self._layers or any(layer not in self.viewer.layers for layer in self._layers):
            self._layers = store_layers.show_outputs(
                self.viewer, job.store, self._job_layer, job.downsample, self._job_prefix
            )
        store_layers.refresh(self._layers, final=final, pasted=True)

    def _finish(self, job: StainJob) -> None:
        self._job = None
        self.cancel_button.setEnabled(False)
        if job.error is not None:  # the runner showed it
            self.progress_bar.setMaximum(1)
            self.progress_bar.setValue(0)
            self.status_label.setText("Failed: see the notification.")
        else:
            self._refresh_layers(job, final=True)
            total = sum(r.total for r in job.results)
            self.progress_bar.setMaximum(max(total, 1))
            self.progress_bar.setValue(
                sum(r.computed + r.background + r.already_done for r in job.results)
            )
            self.status_label.setText(self._summary(job))
            if job.cancelled:
                notifications.show_info(self.status_label.text())
        if self._pending is not None:
            order, self._pending = self._pending, None
            self._start(*order)

    def _summary(self, job: StainJob) -> str:
        computed = sum(r.computed for r in job.results)
        background = sum(r.background for r in job.results)
        already = sum(r.already_done for r in job.results)
        seconds = time.perf_counter() - self._job_started
        text = (
            f"{computed} tiles stained, {background} background, {already} already done "
            f"({seconds:.1f} s)."
        )
        if job.cancelled:
            return f"Cancelled: {text} Stain again to resume."
        return text

    # ---- auto, side by side, closing ------------------------------------------------------------

    def show_slide(self, layer) -> None:
        """Make ``layer`` the H&E layer (a new slide); with Auto on, stain its view once the
        camera rests."""
        self._update_layer_boxes()
        self.layer_box.setCurrentIndex(self.layer_box.findText(layer.name))
        if self.auto_box.isChecked():
            self._auto_timer.start()

    def _on_auto_toggled(self, on: bool) -> None:
        camera = self.viewer.scene.camera.events
        for event in (camera.center, camera.zoom):
            if on:
                event.connect(self._camera_moved)
            else:
                event.disconnect(self._camera_moved)
        if on:
            self.stain_view()
        else:
            self._auto_timer.stop()

    def _camera_moved(self, event=None) -> None:
        self._auto_timer.start()  # restarts the countdown: stains once the camera rests

    def _auto_stain(self) -> None:
        if self.auto_box.isChecked():
            self.stain_view()

    def _set_side_by_side(self, on: bool) -> None:
        self.viewer.canvas.grid.enabled = on  # side_by_side.follow fits and labels the panes

    def _sync_side_by_side(self, event=None) -> None:
        self.side_button.setChecked(self.viewer.canvas.grid.enabled)

    def _on_close(self) -> None:
        """napari closed (the runner stopped the running job and the staining process): no auto
        staining, no queued job; a stopped job is a notification."""
        self._auto_timer.stop()
        self._pending = None
        job, self._job = self._job, None
        if job is not None:
            done = sum(r.computed + r.background for r in job.results)
            if job.progress is not None:
                done = max(done, job.progress.done)
            notifications.show_info(
                f"napari closed: staining stopped after {done} tiles; what is done is kept, "
                "and staining again resumes it."
            )
