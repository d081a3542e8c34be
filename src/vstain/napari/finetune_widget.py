"""The "Fine-tune" dock widget: rectangles on the H&E, a base checkpoint, Train in the
background with live loss and validation plots, a preview re-stained at each validation, Stop
keeping the best weights. The run itself is `vstain.train.finetune.finetune`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Shapes
from napari.utils import notifications
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
from vstain.models import read_card
from vstain.napari.checkpoint_picker import CheckpointPicker
from vstain.napari.finetune_job import FinetuneJob, FinetuneRequest
from vstain.napari.hub import hub
from vstain.napari.job_runner import JobRunner
from vstain.napari.layer_choice import (
    SlideCache,
    fill_box,
    shapes_layers,
    slide_layers,
    slide_path_of,
)
from vstain.napari.line_plot import LinePlot
from vstain.napari.model_cache import MODELS
from vstain.napari.notify import notify_error
from vstain.napari.registration_layers import put_layer
from vstain.napari.store_layers import aligned_placement
from vstain.napari.thread_job import Call
from vstain.napari.viewport import world_box_to_region
from vstain.napari.wrapping_label import wrapping_label
from vstain.pipeline import choose_level
from vstain.registration import registered_reader
from vstain.train.finetune import PARTS, trainable_counts
from vstain.train.region_geojson import write_regions
from vstain.train.regions import Region

POLL_MS = 250
VALIDATION_COLOUR, TRAINING_COLOUR = "orange", "lime"
PREVIEW = "fine-tune preview"
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


def base_facts(checkpoint: Path) -> tuple[dict[str, int], float | None]:
    """Weights per trainable part of a base checkpoint and the learning rate it was trained
    with (None when its card does not say); loads the model through the plugin's cache."""
    model = MODELS.get(checkpoint, "auto").model
    return trainable_counts(model), model.card.config.get("lr")


class FinetuneWidget(QWidget):
    """Layer pickers, base checkpoint, what to train, Train / Stop, live plots, preview."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._slides = SlideCache()
        self._build()
        self.runner = JobRunner(self, POLL_MS)
        self.base_box.checkpoint_changed.connect(self._on_base_changed)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._update_boxes)
        self._update_boxes()
        self._on_base_changed(self.base_box.checkpoint)

    # ---- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.he_box, self.ihc_box, self.shapes_box = QComboBox(), QComboBox(), QComboBox()
        self.base_box, self.part_box = CheckpointPicker("Base checkpoint"), QComboBox()
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
        return self.base_box.checkpoint

    def load_base(self, path: str | Path) -> bool:
        """Add a checkpoint to the base picker and select it (False and a notification when it
        is not one)."""
        return self.base_box.add(path)

    def _on_base_changed(self, base: Path | None) -> None:
        """Read the parameter counts per part and the base's learning rate in the background
        (after the running job, if any); Train waits for them."""
        self.part_box.clear()
        self.train_button.setEnabled(False)
        if base is None or self.runner.busy:  # a running job reads the base when it ends
            return
        self.runner.run(Call(lambda: base_facts(base)), done=lambda job: self._show_base(base, job))

    def _show_base(self, base: Path, job: Call) -> None:
        if base != self.base:  # another base was chosen meanwhile
            self._on_base_changed(self.base)
            return
        if job.error is not None:
            self.status_label.setText("The base checkpoint does not load: see the notification.")
            return
        self.train_button.setEnabled(True)
        counts, lr = job.result
        for part in PARTS:
            self.part_box.addItem(f"{part} ({counts[part]:,} weights)", part)
        self.lr_box.setValue(1e-4 if lr is None else float(lr))
        self.lr_box.setEnabled(lr is not None)

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
        return self.runner.busy

    def _slide(self, layer) -> Slide:
        return self._slides.of(layer)

    def _ihc_reader(self, he: Slide):
        layer = self.ihc_box.currentData()
        if layer is None or layer is self.he_box.currentData():
            raise SlideError("Pick the real IHC layer (not the H&E).")
        ihc = self._slide(layer)
        reg = layer.metadata.get("vstain_registration")
        if reg is not None:
            return registered_reader(he, ihc, reg)
        if ihc.shape == he.shape:
            return ihc
        raise SlideError(
            f"{layer.name!r} is not registered to the H&E: register it in 'Compare with real IHC'."
        )

    def _request(self) -> FinetuneRequest:
        if self.base is None or self.part_box.currentData() is None:
            raise VstainError("Choose a base checkpoint and wait until it is read.")
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
        if self.runner.busy:
            return
        try:
            request = self._request()
        except VstainError as e:
            notify_error(e)
            return
        self.loss_plot.clear()
        self.val_plot.clear()
        self.progress_bar.setRange(0, request.settings["steps"])
        self.progress_bar.setValue(0)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status_label.setText("Training...")
        self.runner.run(FinetuneJob(request), tick=self._tick, done=self._finish)

    def stop(self) -> None:
        """Stop at the next step; the best validated checkpoint so far is kept."""
        if isinstance(self.runner.job, FinetuneJob):
            self.runner.cancel()
            self.status_label.setText("Stopping...")

    def _tick(self, job: FinetuneJob) -> None:
        while job.losses:
            step, losses = job.losses.popleft()
            self.loss_plot.add(step, losses)
        while job.validations:
            step, metrics = job.validations.popleft()
            self.val_plot.add(step, {k: metrics[k] for k in SCORES if k in metrics})
        while job.previews:
            self._show_preview(job.request, *job.previews.popleft())
        self.progress_bar.setValue(job.step)
        eta = job.eta_seconds
        if not job.finished and eta is not None:
            self.status_label.setText(f"Step {job.step} of {job.steps}, about {eta:.0f} s left.")

    def _show_preview(self, request: FinetuneRequest, step: int, rgb: np.ndarray, window) -> None:
        he = self._he_layer()
        ds = request.he.downsamples[request.level]
        placement = aligned_placement(he, ds)
        x, y = window[:2]
        placement["translate"] = tuple(
            np.asarray(placement["translate"]) + np.array([y, x]) * np.asarray(placement["scale"])
        )
        put_layer(self.viewer, PREVIEW, "image", rgb, rgb=True, **placement)
        self.status_label.setText(f"Preview updated at step {step} (1/{ds:g} resolution).")

    def _finish(self, job: FinetuneJob) -> None:
        self.train_button.setEnabled(self.part_box.count() > 0)
        self.stop_button.setEnabled(False)
        if self.base is not None and self.part_box.count() == 0:  # chosen while training
            self._on_base_changed(self.base)
        if job.error is not None:  # the runner showed it
            self.status_label.setText("Failed: see the notification. The base is untouched.")
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


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box
