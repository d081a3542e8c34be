"""The plugin's checkpoint picker: a list of checkpoints (the shipped ones first) followed by
actions such as "Load checkpoint...", and the file dialog behind that action."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from vstain.errors import VstainError
from vstain.models import ModelCard, read_card
from vstain.napari.notify import notify_error
from vstain.weights import shipped_checkpoints

LOAD_CHECKPOINT = "Load checkpoint..."


def checked_card(path: str | Path) -> ModelCard | None:
    """The card of a checkpoint file, or None (and a notification) when it is not one."""
    try:
        return read_card(path)
    except VstainError as e:
        notify_error(e)
        return None


def ask_checkpoint(parent: QWidget, title: str) -> Path | None:
    """A file dialog for a ``.safetensors`` checkpoint; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, "", "vstain checkpoints (*.safetensors)")
    return Path(path) if path else None


class CheckpointPicker(QComboBox):
    """Checkpoints by name, then actions. Choosing a checkpoint emits ``checkpoint_changed(path)``
    (None while none is chosen); choosing an action keeps the checkpoint chosen before and runs
    the action ("Load checkpoint..." asks for a file, see `add`). The first shipped checkpoint
    is chosen at the start."""

    checkpoint_changed = Signal(object)

    def __init__(self, dialog_title: str = "Load a vstain checkpoint"):
        super().__init__()
        self._dialog_title = dialog_title
        self._actions: dict[str, Callable[[], None]] = {}
        for name, path in shipped_checkpoints().items():
            self._insert(name, Path(path))
        self._index = 0 if self.count() else -1  # the checkpoint chosen
        self.add_action(LOAD_CHECKPOINT, self._ask)
        self.currentIndexChanged.connect(self._on_changed)
        self.activated.connect(self._on_activated)

    @property
    def checkpoint(self) -> Path | None:
        return Path(self.itemData(self._index)) if self._index >= 0 else None

    @property
    def name(self) -> str:
        return self.itemText(self._index) if self._index >= 0 else ""

    def add_action(self, text: str, run: Callable[[], None]) -> None:
        """An item after the checkpoints that calls ``run()`` when the user chooses it."""
        self._actions[text] = run
        self.addItem(text)

    def add(self, path: str | Path) -> bool:
        """Add a checkpoint file (named by its file name, or its path when that name is taken)
        and choose it; False (and a notification) when it is not a vstain checkpoint."""
        path = Path(path)
        if checked_card(path) is None:
            return False
        index = self.findData(str(path))
        if index < 0:
            name = path.stem if self.findText(path.stem) < 0 else str(path)
            index = self._insert(name, path)
        self.setCurrentIndex(index)
        return True

    def _insert(self, name: str, path: Path) -> int:
        index = next((i for i in range(self.count()) if self.itemText(i) in self._actions), None)
        index = self.count() if index is None else index
        self.insertItem(index, name, str(path))
        return index

    def _ask(self) -> None:
        path = ask_checkpoint(self, self._dialog_title)
        if path is not None:
            self.add(path)

    def _on_activated(self, index: int) -> None:
        action = self._actions.get(self.itemText(index))
        if action is not None:
            if self._index >= 0:
                self.setCurrentIndex(self._index)
            action()

    def _on_changed(self, index: int) -> None:
        if index < 0 or self.itemText(index) in self._actions:
            if self._index < 0:
                self.checkpoint_changed.emit(None)
            return
        if index != self._index:
            self._index = index
            self.checkpoint_changed.emit(self.checkpoint)
