"""The slide navigator, a section of the Virtual stain widget: a folder of slides, Previous / Next
(and PageUp / PageDown), the real IHC paired by a naming rule, the stored virtual IHC of each
slide and model shown at once, the camera kept at the same relative place.

A running staining job is cancelled, and the slide changes once it has stopped, so no layer of
the old slide is left updating.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import zarr
from napari.utils import notifications
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from vstain.errors import VstainError
from vstain.io import Slide, open_slide
from vstain.io.ome_zarr import is_output_store
from vstain.io.slide_set import DEFAULT_RULE, SlidePair, folder_slides
from vstain.models import read_card, sha256_file
from vstain.napari import slide_swap
from vstain.napari.notify import notify_error
from vstain.napari.stain_job import store_path

HE_NAME = "H&E"
#: napari binds neither by default (n / p are layer modes of Labels, Points and Shapes).
NEXT_KEY, PREVIOUS_KEY = "PageDown", "PageUp"
#: While the old slide's job stops, whether it has is checked this often.
WAIT_MS = 50


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file, computed once per file version."""
    stat = os.stat(path)
    return _sha256(Path(path), stat.st_mtime_ns, stat.st_size)


def real_ihc_name(checkpoint: Path | None) -> str:
    """``real <marker>`` for the chosen model's marker(s), ``real IHC`` without a model."""
    markers = read_card(checkpoint).markers if checkpoint is not None else []
    return " ".join(["real", *markers]) if markers else "real IHC"


class SlideNavigator(QWidget):
    """Folder, IHC rule, Previous / Next; drives the Virtual stain widget ``stain`` (its model,
    settings, Auto and job) through its public methods."""

    def __init__(self, viewer, stain):
        super().__init__()
        self.viewer = viewer
        self.stain = stain
        self.pairs: list[SlidePair] = []
        self.index = -1
        self.he_layer = None
        self.ihc_layer = None
        self._target: tuple[int, int] | None = None  # (index, step) waiting for the job to stop
        self._switching_to: int | None = None  # Qt draws during a switch (slide_swap.remove)
        self._build()
        self._wait = QTimer(self)
        self._wait.setInterval(WAIT_MS)
        self._wait.timeout.connect(self._switch_when_idle)
        viewer.bind_key(NEXT_KEY, lambda _viewer: self.next(), overwrite=True)
        viewer.bind_key(PREVIOUS_KEY, lambda _viewer: self.previous(), overwrite=True)

    def _build(self) -> None:
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a folder of slides")
        self.folder_edit.returnPressed.connect(lambda: self.open_folder(self.folder_edit.text()))
        choose = QPushButton("Open...")
        choose.clicked.connect(self._choose_folder)
        folder = QHBoxLayout()
        folder.addWidget(self.folder_edit)
        folder.addWidget(choose)
        self.rule_edit = QLineEdit(DEFAULT_RULE)
        self.rule_edit.setToolTip(
            "File name of a slide's real IHC: {name} is the H&E's name without its suffix, "
            "* and ? are wildcards. Files it matches are not listed as H&E slides."
        )
        self.rule_edit.editingFinished.connect(self._reload)
        self.previous_button = QPushButton(f"Previous ({PREVIOUS_KEY})")
        self.previous_button.clicked.connect(self.previous)
        self.next_button = QPushButton(f"Next ({NEXT_KEY})")
        self.next_button.clicked.connect(self.next)
        self.position_label = QLabel("No folder open.")
        buttons = QHBoxLayout()
        buttons.addWidget(self.previous_button)
        buttons.addWidget(self.next_button)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Folder", folder)
        form.addRow("Real IHC", self.rule_edit)
        form.addRow(buttons)
        form.addRow(self.position_label)
        self._update_buttons()

    # ---- the list of slides ---------------------------------------------------------------------

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of H&E slides")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | os.PathLike) -> None:
        """List the folder's slides (paired by the rule) and show the first readable one."""
        self.folder_edit.setText(str(folder))
        try:
            pairs = folder_slides(Path(folder).expanduser(), self.rule_edit.text())
        except VstainError as e:
            notify_error(e)
            return
        if not pairs:
            notifications.show_warning(
                f"{folder} holds no slides vstain reads (SVS, TIFF, OME-Zarr, PNG, JPEG, ...)."
            )
            return
        self.pairs, self.index = pairs, -1
        self.go(0, 1)

    def _reload(self) -> None:
        """The rule changed: pair the folder again and show the same H&E slide."""
        if not self.pairs:
            return
        current = self.pairs[self.index].he if self.index >= 0 else None
        try:
            pairs = folder_slides(Path(self.folder_edit.text()).expanduser(), self.rule_edit.text())
        except VstainError as e:
            notify_error(e)
            return
        self.pairs = pairs
        hes = [pair.he for pair in pairs]
        self.index = -1
        if pairs:
            self.go(hes.index(current) if current in hes else 0, 1)

    # ---- moving ---------------------------------------------------------------------------------

    @property
    def _heading_to(self) -> int:
        """The slide shown, or the one being shown, or the one shown once the job has stopped."""
        if self._target is not None:
            return self._target[0]
        return self.index if self._switching_to is None else self._switching_to

    def next(self) -> None:
        """The next slide (the list stops at its last slide)."""
        self.go(self._heading_to + 1, 1)

    def previous(self) -> None:
        """The previous slide (the list stops at its first slide)."""
        self.go(self._heading_to - 1, -1)

    def go(self, index: int, step: int) -> None:
        """Show slide ``index`` (an unreadable one is skipped in the direction ``step``), once the
        running job, if any, has stopped."""
        if not 0 <= index < len(self.pairs):
            return
        self._target = (index, step)
        self._switch_when_idle()
        if self._target is not None:
            self.position_label.setText("Stopping the running job...")
            self._wait.start()

    def _switch_when_idle(self) -> None:
        if self._switching_to is not None:  # a click while Qt draws during a switch: after it
            return
        if self.stain.busy:  # cancelled again: Auto may have queued a view of the old slide
            self.stain.cancel()
            return
        self._wait.stop()
        target, self._target = self._target, None
        if target is not None:
            self._switching_to = target[0]
            try:
                self._switch(*target)
            finally:
                self._switching_to = None

    def _switch(self, index: int, step: int) -> None:
        while 0 <= index < len(self.pairs):
            slide = self._open(self.pairs[index].he)
            if slide is not None:
                self._show(index, slide)
                return
            index += step
        self._update_buttons()  # no readable slide that way: stay
        if self.index < 0:
            self.position_label.setText("No slide of the folder could be read.")

    @staticmethod
    def _open(path: Path | None) -> Slide | None:
        """The slide at ``path``; None (and a notification) when it cannot be read."""
        if path is None:
            return None
        try:
            return open_slide(path)
        except VstainError as e:
            notify_error(e)
            return None

    # ---- showing a slide ------------------------------------------------------------------------

    def _show(self, index: int, slide: Slide) -> None:
        old = self.he_layer if self.he_layer in self.viewer.layers else None
        view = slide_swap.relative_view(self.viewer, old) if old is not None else None
        old_path = Path(old.metadata["path"]) if old is not None else None
        old_stores = slide_swap.store_layers_of(self.viewer, old_path) if old else []
        ihc = self._open(self.pairs[index].ihc)
        self.he_layer = slide_swap.put_slide(self.viewer, slide, HE_NAME, old)
        self._show_real_ihc(ihc)
        store = self._stored(slide)
        alike = [
            layer
            for layer in old_stores
            if store is not None and slide_swap.same_model(layer, old_path, store, slide.path)
        ]
        for layer in old_stores:
            if layer not in alike:
                slide_swap.remove(self.viewer, layer)
        if store is not None:
            self._show_store(store, slide, alike)
        if view is not None:
            slide_swap.restore_view(self.viewer, self.he_layer, view)
        else:
            self.viewer.reset_view()
        self.index = index
        self._update_buttons()
        self.stain.show_slide(self.he_layer)

    def _show_real_ihc(self, ihc: Slide | None) -> None:
        old = self.ihc_layer if self.ihc_layer in self.viewer.layers else None
        if ihc is None:
            slide_swap.remove(self.viewer, old)
            self.ihc_layer = None
            return
        above_he = self.viewer.layers.index(self.he_layer) + 1
        name = real_ihc_name(self.stain.checkpoint if self.stain.has_model else None)
        self.ihc_layer = slide_swap.put_slide(self.viewer, ihc, name, old, above_he)

    def _stored(self, slide: Slide) -> Path | None:
        """The chosen model's existing store of ``slide`` (same settings as a click), or None."""
        if not self.stain.has_model:
            return None
        request = self.stain.stain_request("view", (), self.he_layer)
        try:
            store = store_path(request, checkpoint_sha256(self.stain.checkpoint))
        except OSError as e:  # the checkpoint went away
            notify_error(e)
            return None
        return store if is_output_store(store) else None

    def _show_store(self, store: Path, slide: Slide, old: list) -> None:
        """Show ``store`` over the H&E at once (nothing is computed: the layers read the stored
        tiles), in the places of ``old`` (the last slide's layers of the same model)."""
        try:
            level = zarr.open_group(store, mode="r").attrs["vstain"]["level"]
            downsample, prefix = slide.downsamples[level], self.stain.output_prefix
            slide_swap.put_store(self.viewer, store, self.he_layer, downsample, prefix, old)
        except VstainError as e:  # a damaged store
            notify_error(e)
            for layer in old:
                slide_swap.remove(self.viewer, layer)

    def _update_buttons(self) -> None:
        self.previous_button.setEnabled(self.index > 0)
        self.next_button.setEnabled(0 <= self.index < len(self.pairs) - 1)
        if self.index < 0:
            return
        pair = self.pairs[self.index]
        partner = pair.ihc.name if pair.ihc else "no real IHC"
        self.position_label.setText(
            f"{self.index + 1} / {len(self.pairs)}: {pair.he.name} ({partner})"
        )
