"""The "Fine-tune" dock widget: rectangles on the H&E, a base checkpoint, Train in the
background with live loss and validation plots, a preview re-stained at each validation, Stop
keeping the best weights. The run itself is `vstain.train.finetune.finetune`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Shapes
from napari.utils import notifications
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from vstain.errors import RegionError, SlideError, VstainError
from vstain.io import Slide
from vstain.models import load_checkpoint, read_card
from vstain.napari.closing import ShutdownOnClose
from vstain.napari.finetune_job import FinetuneJob, FinetuneRequest
from vstain.napari.hub import hub
from vstain.napari.layer_choice import (
    SlideCache,
    fill_box,
    shapes_layers,
    slide_layers,
    slide_path_of,
)
from vstain.napari.line_plot import LinePlot
from vstain.napari.registration_layers import put_layer
from vstain.napari.stain_widget import notify_error, wrapping_label
from vstain.napari.store_layers import aligned_placement
from vstain.napari.viewport import world_box_to_region
from vstain.pipeline import choose_level
from vstain.train.finetune import PARTS, trainable_counts
from vstain.train.region_geojson import write_regions
from vstain.train.regions import Region
from vstain.weights import shipped_checkpoints

POLL_MS = 250
VALIDATION_COLOUR, TRAINING_COLOUR = "orange", "lime"
PREVIEW = "fine-tune preview"
LOAD = "Load checkpoint..."
SCORES = ("psnr", "ssim", "object_f1")


def shape_regions(shapes: Shapes, he) -> list[Region]:
    """The rectangles of ``shapes`` as regions of ``he`` (level 0), with their validation flag
    (the ``validation`` feature); other shapes are left out."""
    flags = shapes.features.get("validation", None)
    regions = []
    for i, (vertices, kind) in enumerate(zip(shapes.data, shapes.shape_type, strict=True)):
        if kind != "rectangle":
            continue
        world = np.array([shapes.data_to_world(v)[-2:] for v in vertices])
        region = world_box_to_region(he, world.min(axis=0), world.max(axis=0))
        regions.append(Region(*region, validation=bool(flags is not None and flags.iloc[i])))
    return regions


class FinetuneWidget(ShutdownOnClose, QWidget):
    """Layer pickers, base checkpoint, what to train, Train / Stop, live plots, preview."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._slides = SlideCache()
        self._job: FinetuneJob | None = None
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        for name, path in shipped_checkpoints().items():
            self.base_box.addItem(name, str(path))
        self.base_box.addItem(LOAD)
        self.base_box.activated.connect(self._on_base_activated)
        self.base_box.currentIndexChanged.connect(self._on_base_changed)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._update_boxes)
        self._update_boxes()
        self._on_base_changed()

    # ---- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.he_box, self.ihc_box, self.shapes_box = QComboBox(), QComboBox(), QComboBox()
        self.base_box, self.part_box = QComboBox(), QComboBox()
        self.steps_box = _spin(1, 100_000, 300)
        self.batch_box = _spin(1, 64, 4)
        self.crop_box = _spin(16, 2048, 128)
        self.val_every_box = _spin(1, 10_000, 50)
        self.lr_box = QDoubleSpinBox()
        self.lr_box.setDecimals(6)
        self.lr_box.setRange(1e-6, 1.0)
        self.lr_box.setSingleStep(1e-5)
        self.augment_box = QCheckBox("Augment (flips, rotations, stain jitter)")
        self.augment_box.setChecked(True)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("next to the H&E slide")
        form = QFormLayout()
        for label, widget in (
            ("H&&E", self.he_box),
            ("Real IHC (registered)", self.ihc_box),
            ("Rectangles", self.shapes_box),
            ("Base checkpoint", self.base_box),
            ("Train", self.part_box),
            ("Steps", self.steps_box),
            ("Learning rate", self.lr_box),
            ("Batch size", self.batch_box),
            ("Crop (px)", self.crop_box),
            ("Validate every", self.val_every_box),
            ("Save as", self.out_edit),
        ):
            form.addRow(label, widget)
        form.addRow(self.augment_box)

        self.validation_button = QPushButton("Mark selected as validation")
        self.validation_button.clicked.connect(self.toggle_validation)
        self.export_button = QPushButton("Export regions (GeoJSON)...")
        self.export_button.clicked.connect(self._export_regions)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons = QGridLayout()
        buttons.addWidget(self.validation_button, 0, 0)
        buttons.addWidget(self.export_button, 0, 1)
        buttons.addWidget(self.train_button, 1, 0)
        buttons.addWidget(self.stop_button, 1, 1)

        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m steps")
        self.status_label = wrapping_label("Draw rectangles on the H&E where the real IHC is good.")
        self.loss_plot = LinePlot("training losses", log=True)
        self.val_plot = LinePlot("validation (each line on its own scale)", own_scale=True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.val_plot)
        layout.addStretch(1)

    def _update_boxes(self, event=None) -> None:
        slides = slide_layers(self.viewer)
        fill_box(self.he_box, slides)
        fill_box(self.ihc_box, slides)
        fill_box(self.shapes_box, shapes_layers(self.viewer))
        if self.ihc_box.count() > 1 and self.ihc_box.currentIndex() == self.he_box.currentIndex():
            self.ihc_box.setCurrentIndex(1 if self.he_box.currentIndex() == 0 else 0)

    # ---- base checkpoint ------------------------------------------------------------------------

    @property
    def base(self) -> Path | None:
        data = self.base_box.currentData()
        return Path(data) if data else None

    def load_base(self, path: str | Path) -> bool:
        """Add a checkpoint to the base picker and select it."""
        try:
            read_card(path)
        except VstainError as e:
            notify_error(e)
            return False
        index = self.base_box.findData(str(path))
        if index < 0:
            index = self.base_box.count() - 1
            self.base_box.insertItem(index, Path(path).stem, str(path))
        self.base_box.setCurrentIndex(index)
        return True

    def _on_base_activated(self, index: int) -> None:
        if self.base_box.itemText(index) == LOAD:
            path, _ = QFileDialog.getOpenFileName(self, "Base checkpoint", "", "*.safetensors")
            if not (path and self.load_base(path)):
                self.base_box.setCurrentIndex(0)

    def _on_base_changed(self, index: int | None = None) -> None:
        """Parameter counts per part and the base's learning rate."""
        self.part_box.clear()
        if self.base is None:
            return
        try:
            model = load_checkpoint(self.base)
        except VstainError as e:
            notify_error(e)
            return
        counts = trainable_counts(model)
        for part in PARTS:
            self.part_box.addItem(f"{part} ({counts[part]:,} weights)", part)
        self.lr_box.setValue(float(model.card.config.get("lr", 1e-4)))
        self.lr_box.setEnabled("lr" in model.card.config)

    # ---- regions --------------------------------------------------------------------------------

    def _shapes(self) -> Shapes:
        shapes = self.shapes_box.currentData()
        if shapes is None or shapes not in self.viewer.layers:
            raise RegionError("No Shapes layer: add one and draw rectangles on the H&E.")
        return shapes

    def _he_layer(self):
        layer = self.he_box.currentData()
        if layer is None or layer not in self.viewer.layers:
            raise SlideError("No H&E layer: open the slide and pick it.")
        return layer

    def toggle_validation(self) -> None:
        """Flip the validation flag of the selected rectangles (orange edges: validation)."""
        try:
            shapes = self._shapes()
        except VstainError as e:
            notify_error(e)
            return
        if "validation" not in shapes.features:
            shapes.features["validation"] = np.zeros(len(shapes.data), bool)
        flags = shapes.features["validation"].to_numpy(bool).copy()
        for i in shapes.selected_data:
            flags[i] = not flags[i]
        shapes.features["validation"] = flags
        shapes.edge_color = [VALIDATION_COLOUR if f else TRAINING_COLOUR for f in flags]
        shapes.refresh()

    def regions(self) -> list[Region]:
        """The rectangles drawn, in H&E level-0 pixels, with their validation flags."""
        regions = shape_regions(self._shapes(), self._he_layer())
        if not regions:
            raise RegionError("Draw at least one rectangle on the Shapes layer.")
        return regions

    def _export_regions(self) -> None:
        try:
            regions = self.regions()
        except VstainError as e:
            notify_error(e)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Regions as GeoJSON", "", "*.geojson")
        if path:
            write_regions(path, regions)

    # ---- training -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._job is not None

    def _slide(self, layer) -> Slide:
        return self._slides.of(layer)

    def _ihc_reader(self, he: Slide):
        layer = self.ihc_box.currentData()
        if layer is None or layer is self.he_box.currentData():
            raise SlideError("Pick the real IHC layer (not the H&E).")
        ihc = self._slide(layer)
        reg = layer.metadata.get("vstain_registration")
        if reg is not None:
            return lambda x, y, w, h, lvl: reg.warp_ihc_region(
                ihc, x, y, w, h, he.downsamples[lvl]
            )[0]
        if ihc.shape == he.shape:
            return ihc
        raise SlideError(
            f"{layer.name!r} is not registered to the H&E: register it in 'Compare with real IHC'."
        )

    def _request(self) -> FinetuneRequest:
        if self.base is None:
            raise VstainError("Choose a base checkpoint.")
        he_layer = self._he_layer()
        he = self._slide(he_layer)
        out = self.out_edit.text().strip()
        out = Path(out) if out else he.path.parent / f"{self.base.stem}-finetuned.safetensors"
        settings = {
            "part": self.part_box.currentData(),
            "steps": self.steps_box.value(),
            "lr": self.lr_box.value() if self.lr_box.isEnabled() else None,
            "batch_size": self.batch_box.value(),
            "crop": self.crop_box.value(),
            "augment": self.augment_box.isChecked(),
            "val_every": self.val_every_box.value(),
        }
        return FinetuneRequest(
            self.base,
            he,
            self._ihc_reader(he),
            tuple(self.regions()),
            out,
            choose_level(he, read_card(self.base).pixel_size),
            settings,
            {"he": str(he.path), "ihc": str(slide_path_of(self.ihc_box.currentData()))},
        )

    def train(self) -> None:
        """Start fine-tuning in the background."""
        if self._job is not None:
            return
        try:
            request = self._request()
        except VstainError as e:
            notify_error(e)
            return
        self.loss_plot.clear()
        self.val_plot.clear()
        self.watch_close()
        self._job = FinetuneJob(request).start()
        self.progress_bar.setRange(0, request.settings["steps"])
        self.progress_bar.setValue(0)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status_label.setText("Training...")
        self._timer.start()

    def stop(self) -> None:
        """Stop at the next step; the best validated checkpoint so far is kept."""
        if self._job is not None:
            self._job.cancel()
            self.status_label.setText("Stopping...")

    def _poll(self) -> None:
        job = self._job
        if job is None:
            return
        finished = job.finished
        while job.losses:
            step, losses = job.losses.popleft()
            self.loss_plot.add(step, losses)
        while job.validations:
            step, metrics = job.validations.popleft()
            self.val_plot.add(step, {k: metrics[k] for k in SCORES if k in metrics})
        while job.previews:
            self._show_preview(*job.previews.popleft())
        self.progress_bar.setValue(job.step)
        eta = job.eta_seconds
        if not finished and eta is not None:
            self.status_label.setText(f"Step {job.step} of {job.steps}, about {eta:.0f} s left.")
        if finished:
            self._finish(job)

    def _show_preview(self, step: int, rgb: np.ndarray, window) -> None:
        he = self._he_layer()
        ds = self._job.request.he.downsamples[self._job.request.level]
        placement = aligned_placement(he, ds)
        x, y = window[:2]
        placement["translate"] = tuple(
            np.asarray(placement["translate"]) + np.array([y, x]) * np.asarray(placement["scale"])
        )
        put_layer(self.viewer, PREVIEW, "image", rgb, rgb=True, **placement)
        self.status_label.setText(f"Preview updated at step {step} (1/{ds:g} resolution).")

    def _finish(self, job: FinetuneJob) -> None:
        self._timer.stop()
        self._job = None
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if job.error is not None:
            self.status_label.setText("Failed: see the notification. The base is untouched.")
            notify_error(job.error)
            return
        result = job.result
        if result.checkpoint is None:
            self.status_label.setText("Stopped before the first validation: nothing kept.")
            return
        before, after = result.before or {}, result.after or {}
        change = ", ".join(
            f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in SCORES if k in before and k in after
        )
        self.status_label.setText(
            f"Saved {result.checkpoint.name} (step {result.best_step} of {result.steps}). {change}"
        )
        if result.warning:
            notifications.show_warning(result.warning)
        notifications.show_info(f"Fine-tuned checkpoint saved: {result.checkpoint}")
        hub.checkpoint_saved.emit(result.checkpoint)

    def shutdown(self) -> None:
        """Stop training (keeping the best so far) and wait for the thread."""
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job.wait(30)
            self._job = None


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box
