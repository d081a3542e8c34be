"""The "Compare with real IHC" dock widget: register the adjacent section, show it through the
layer's affine (nothing resampled), and compute difference, discordance and positivity of a
region in the background.

Science lives in `vstain.registration` and `vstain.review`; this module only turns clicks into
calls on a job thread (through the widget's `JobRunner`) and results into layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Points
from napari.utils import notifications
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vstain.errors import RegionError, SlideError, VstainError
from vstain.io import Slide
from vstain.napari import registration_layers as placement
from vstain.napari import side_by_side
from vstain.napari.checkpoint_picker import ask_checkpoint, checked_card
from vstain.napari.job_runner import JobRunner
from vstain.napari.layer_choice import SlideCache, fill_box, shapes_layers, slide_layers
from vstain.napari.model_cache import MODELS
from vstain.napari.notify import notify_error
from vstain.napari.thread_job import Call
from vstain.napari.viewport import rectangle_regions, visible_region
from vstain.napari.wrapping_label import wrapping_label
from vstain.registration import Registration, register
from vstain.review.maps import (
    BOTH,
    REAL_ONLY,
    VIRTUAL_ONLY,
    compare_positivity,
    difference_map,
    discordance,
)
from vstain.review.region import ReviewRegion, keypoint_pairs

VIEW = "Visible region"
#: Longest side (px) of a difference map; larger regions are computed at a coarser level.
MAX_SIDE = 2048
DISCORDANCE_COLOURS = {
    None: "transparent",
    0: "transparent",
    VIRTUAL_ONLY: "magenta",
    REAL_ONLY: "cyan",
    BOTH: "yellow",
}
HE_POINTS, IHC_POINTS = "control points (H&E)", "control points (real IHC)"
KEYPOINTS_HE, KEYPOINTS_IHC = "K-Stain keypoints (H&E)", "K-Stain keypoints (real IHC)"
DISPLACEMENTS = "K-Stain keypoint displacement"


class CompareWidget(QWidget):
    """H&E / virtual / real IHC pickers; Register, nudge, difference, positivity, side by side."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._slides = SlideCache()
        self._positivity = None
        self._build()
        self.runner = JobRunner(self)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._update_boxes)
        self._update_boxes()
        side_by_side.follow(self.viewer)

    # ---- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        self.he_box, self.virtual_box, self.real_box = QComboBox(), QComboBox(), QComboBox()
        self.region_box = QComboBox()
        open_button = QPushButton("Open real IHC...")
        open_button.clicked.connect(self._ask_real_ihc)
        self.flow_box = QCheckBox("Local refinement (optical flow)")
        form = QFormLayout()
        form.addRow("H&&E", self.he_box)
        form.addRow("Virtual IHC", self.virtual_box)
        form.addRow("Real IHC", self.real_box)
        form.addRow(open_button)
        form.addRow(self.flow_box)

        self.register_button = QPushButton("Register")
        self.register_button.clicked.connect(self.register)
        self.points_button = QPushButton("Add control points")
        self.points_button.clicked.connect(self.add_control_points)
        self.refit_button = QPushButton("Refit from points")
        self.refit_button.clicked.connect(self.refit_from_points)
        self.difference_button = QPushButton("Difference map")
        self.difference_button.clicked.connect(self.compute_difference)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._export_csv)
        self.keypoints_button = QPushButton("K-Stain keypoints...")
        self.keypoints_button.setToolTip(
            "Keypoints of a K-Stain checkpoint on the H&E and the registered real IHC at the view "
            "centre, and the displacement between them"
        )
        self.keypoints_button.clicked.connect(self._ask_keypoints)
        self.side_button = QPushButton("Side by side")
        self.side_button.setCheckable(True)
        self.side_button.toggled.connect(self.set_side_by_side)
        actions = QGridLayout()
        actions.addWidget(self.register_button, 0, 0, 1, 2)
        actions.addWidget(self.points_button, 1, 0)
        actions.addWidget(self.refit_button, 1, 1)
        actions.addWidget(self.difference_button, 2, 0)
        actions.addWidget(self.region_box, 2, 1)
        actions.addWidget(self.export_button, 3, 0)
        actions.addWidget(self.side_button, 3, 1)
        actions.addWidget(self.keypoints_button, 4, 0, 1, 2)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.status_label = wrapping_label("Pick the layers, then Register.")
        self.table = QTableWidget(0, 0)
        self.table.setMinimumHeight(120)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(actions)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.table)
        layout.addStretch(1)

    def _update_boxes(self, event=None) -> None:
        slides = slide_layers(self.viewer)
        fill_box(self.he_box, slides)
        fill_box(self.virtual_box, slide_layers(self.viewer, stores=True))
        fill_box(self.real_box, slides)
        fill_box(self.region_box, shapes_layers(self.viewer), extras=(VIEW,))
        if self.real_box.count() > 1 and self.real_box.currentData() is self.he_box.currentData():
            self.real_box.setCurrentIndex(1 if self.he_box.currentIndex() == 0 else 0)

    # ---- layers and slides ----------------------------------------------------------------------

    def _layer(self, box: QComboBox, what: str):
        layer = box.currentData()
        if layer is None or layer not in self.viewer.layers:
            raise SlideError(f"No {what} layer: open one and pick it in the Compare panel.")
        return layer

    def _slide(self, layer) -> Slide:
        return self._slides.of(layer)

    def _ask_real_ihc(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open the real IHC slide")
        if not path:
            return
        try:
            layers = self.viewer.open(path, plugin="napari-vstain")
        except Exception as e:  # napari wraps reader errors
            notify_error(e)
            return
        if layers:
            self.real_box.setCurrentIndex(self.real_box.findText(layers[0].name))

    @property
    def registration(self) -> Registration | None:
        """The registration shown on the real IHC layer (None before Register)."""
        try:
            return self._layer(self.real_box, "real IHC").metadata.get("vstain_registration")
        except SlideError:
            return None

    # ---- background work ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _run(self, label: str, fn, on_result) -> None:
        """Run ``fn()`` on a job thread; ``on_result`` gets its result on the main one."""
        if self.runner.busy:
            notifications.show_warning("The Compare panel is still working; wait for it.")
            return
        self.status_label.setText(f"{label}...")
        self.progress_bar.setRange(0, 0)  # busy
        self.runner.run(Call(fn), done=lambda job: self._done(job, on_result))

    def _done(self, job: Call, on_result) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        if job.error is not None:  # the runner showed it
            self.status_label.setText("Failed: see the notification.")
        else:
            on_result(job.result)

    # ---- registration ---------------------------------------------------------------------------

    def register(self) -> None:
        """Register the real IHC to the H&E in the background, then show it aligned."""
        try:
            he, real = self._layer(self.he_box, "H&E"), self._layer(self.real_box, "real IHC")
            if he is real:
                raise SlideError("Pick different layers for the H&E and the real IHC.")
            slides = self._slide(he), self._slide(real)
        except VstainError as e:
            notify_error(e)
            return
        self._run(
            "Registering",
            lambda: register(*slides, flow=self.flow_box.isChecked()),
            lambda reg: self._show_registration(he, real, reg),
        )

    def _show_registration(self, he, real, reg: Registration) -> None:
        real.metadata["vstain_registration"] = reg
        placement.show_registered(real, he, reg)
        quality = f"quality {reg.quality:.2f}"
        if reg.agreement is not None:
            quality += f", {reg.agreement:.0%} of windows agree"
        if reg.ok:
            self.status_label.setText(f"Registered ({quality}).")
        else:
            self.status_label.setText(f"Registration is not reliable ({quality}).")
            notifications.show_warning(
                "The automatic registration is not reliable here: place a few matching control "
                "points (Add control points) and Refit."
            )

    def add_control_points(self) -> None:
        """Two Points layers: click a landmark on the H&E in one, the same on the real IHC in the
        other, in the same order."""
        for name, colour in ((HE_POINTS, "lime"), (IHC_POINTS, "orange")):
            if name not in self.viewer.layers:
                self.viewer.add_points(ndim=2, name=name, face_color=colour, size=20)
        self.status_label.setText(
            f"Add matching points, in the same order, to '{HE_POINTS}' and '{IHC_POINTS}', "
            "then Refit from points."
        )

    def refit_from_points(self) -> None:
        """Fit the registration to the control-point pairs (at least 3)."""
        try:
            he, real = self._layer(self.he_box, "H&E"), self._layer(self.real_box, "real IHC")
            he_points, ihc_points = (self._points(name) for name in (HE_POINTS, IHC_POINTS))
            he_xy = placement.world_to_pixels(he, he_points)
            ihc_xy = placement.world_to_pixels(real, ihc_points)
            reg = placement.fit_control_points(he_xy, ihc_xy, self._slide(he), self._slide(real))
        except VstainError as e:
            notify_error(e)
            return
        self._show_registration(he, real, reg)

    def _points(self, name: str) -> np.ndarray:
        if name not in self.viewer.layers or not isinstance(self.viewer.layers[name], Points):
            raise RegionError(f"No '{name}' layer: press Add control points first.")
        layer = self.viewer.layers[name]
        return np.array([layer.data_to_world(p)[-2:] for p in layer.data]).reshape(-1, 2)

    # ---- difference and positivity --------------------------------------------------------------

    def _region(self, he) -> tuple[int, int, int, int]:
        shapes = self.region_box.currentData()
        if shapes is None:
            return visible_region(self.viewer, he)
        regions, _ = rectangle_regions(shapes, he)
        if not regions:
            raise RegionError(f"Layer {shapes.name!r} has no rectangles: draw one.")
        return regions[-1]

    def compute_difference(self) -> None:
        """Difference map, discordance and positivity of the visible region or the selection."""
        try:
            reg = self.registration
            if reg is None:
                raise SlideError("Register the real IHC first (Register).")
            he = self._layer(self.he_box, "H&E")
            virtual = self._layer(self.virtual_box, "virtual IHC")
            region = self._region(he)
            job = ReviewRegion.plan(
                reg, self._slide(he), virtual.metadata["vstain_store"], region, MAX_SIDE
            )
            ihc = self._slide(self._layer(self.real_box, "real IHC"))
        except VstainError as e:
            notify_error(e)
            return
        self._run("Comparing", lambda: _review(job, ihc), lambda r: self._show_review(he, job, r))

    def _show_review(self, he, job, result) -> None:
        diff, labels, self._positivity = result
        kwargs = placement.region_placement(he, job)
        limit = float(np.nanpercentile(np.abs(diff), 99)) if np.isfinite(diff).any() else 1.0
        limits = (-max(limit, 1e-3), max(limit, 1e-3))
        placement.put_layer(
            self.viewer,
            "DAB difference (virtual - real)",
            "image",
            diff,
            colormap="PiYG",
            contrast_limits=limits,
            **kwargs,
        )
        placement.put_layer(
            self.viewer,
            "discordance (magenta virtual only, cyan real only, yellow both)",
            "labels",
            labels,
            colormap=DISCORDANCE_COLOURS,
            opacity=0.6,
            **kwargs,
        )
        self._fill_table(self._positivity.rows())
        self.export_button.setEnabled(True)
        self.status_label.setText(
            f"Compared {job.width} x {job.height} px at 1/{job.downsample:g} resolution."
        )

    def _fill_table(self, rows: list[dict]) -> None:
        columns = list(rows[0])
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        for i, row in enumerate(rows):
            for j, key in enumerate(columns):
                value = row[key]
                text = f"{value:.2f}" if isinstance(value, float) else str(value)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def _export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Positivity as CSV", "", "CSV (*.csv)")
        if path:
            try:
                self._positivity.write_csv(path)
            except OSError as e:
                notify_error(e)

    # ---- K-Stain keypoints -----------------------------------------------------------------------

    def _ask_keypoints(self) -> None:
        path = ask_checkpoint(self, "A K-Stain checkpoint")
        if path is not None:
            self.show_keypoints(path)

    def show_keypoints(self, checkpoint: str | Path) -> None:
        """Points layers of a K-Stain model's keypoints on the H&E and on the registered real
        IHC (in view), and a Vectors layer from each H&E keypoint to its IHC partner."""
        card = checked_card(checkpoint)
        if card is None:
            return
        try:
            reg = self.registration
            if reg is None:
                raise SlideError("Register the real IHC first (Register).")
            if card.architecture != "k-stain":
                raise SlideError(
                    f"{Path(checkpoint).name} is a {card.architecture} checkpoint; "
                    "keypoints need a k-stain one."
                )
            he = self._layer(self.he_box, "H&E")
            slides = self._slide(he), self._slide(self._layer(self.real_box, "real IHC"))
            region = visible_region(self.viewer, he)
        except VstainError as e:
            notify_error(e)
            return
        self._run(
            "Finding keypoints",
            lambda: keypoint_pairs(MODELS.get(checkpoint, "auto").model, reg, *slides, region),
            lambda pairs: self._show_keypoints(he, *pairs),
        )

    def _show_keypoints(self, he, he_xy: np.ndarray, ihc_xy: np.ndarray, agree: np.ndarray) -> None:
        he_world, ihc_world = (
            np.array([he.data_to_world((y, x)) for x, y in xy]).reshape(-1, 2)
            for xy in (he_xy, ihc_xy)
        )
        units = {"units": tuple(str(u) for u in he.units[-2:])}
        placement.put_layer(
            self.viewer, KEYPOINTS_HE, "points", he_world, face_color="lime", size=8, **units
        )
        placement.put_layer(
            self.viewer, KEYPOINTS_IHC, "points", ihc_world, face_color="orange", size=8, **units
        )
        vectors = np.stack([he_world, ihc_world - he_world], axis=1)
        colours = np.where(agree[:, None], (1.0, 1.0, 0.0, 1.0), (1.0, 0.2, 0.2, 1.0))
        placement.put_layer(
            self.viewer, DISPLACEMENTS, "vectors", vectors, edge_color=colours, **units
        )
        shift = np.linalg.norm(ihc_xy - he_xy, axis=1)
        self.status_label.setText(
            f"{len(he_xy)} keypoint pairs, {agree.sum()} agreeing with K-Stain's affine "
            f"(yellow; red: matched other tissue); displacement median {np.median(shift):.1f} px, "
            f"max {shift.max():.1f} px (H&E pixels)."
        )

    # ---- side by side ---------------------------------------------------------------------------

    def set_side_by_side(self, on: bool) -> None:
        """Grid mode with H&E | virtual | real | difference under one camera."""
        if on:
            names = [self.he_box.currentText(), self.virtual_box.currentText()]
            names += [self.real_box.currentText(), "DAB difference (virtual - real)"]
            placement.order_for_grid(self.viewer, names)
        self.viewer.canvas.grid.enabled = on


def _review(job, ihc: Slide):
    pair = job.read(ihc)
    return difference_map(pair), discordance(pair), compare_positivity(pair)
