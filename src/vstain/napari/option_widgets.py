"""Editors for a model's predict options (sampler steps, n_samples, ...) built from defaults."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

#: Tooltips of option names the models share.
HELP = {
    "steps": "Sampler steps of a diffusion model: more is slower and usually sharper",
    "n_samples": "Samples per tile; with more than one, their spread is the uncertainty layer",
    "seed": "Seed of the sampler noise (the same seed gives the same stain)",
    "tta": "Test-time augmentation (flips and rotations); their spread is the uncertainty layer",
    "marker": "Which marker to show",
    "segment": "Also run the segmentation branch: the positive cells it finds become a labels "
    "layer, one id per cell",
    "sampler": "Diffusion sampler: ddim and dpm-solver++ are fast and deterministic, ddpm is the "
    "paper's ancestral sampler (use it with many steps)",
}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


class OptionsPanel(QWidget):
    """A form with one editor per option: spin boxes for numbers, a check box for flags, a list
    for options with choices (samplers, the card's markers); options without a usable default
    are left to the model."""

    def __init__(self):
        super().__init__()
        self._form = QFormLayout(self)
        self._form.setContentsMargins(0, 0, 0, 0)
        self._editors: dict[str, QWidget] = {}

    def set_options(self, defaults: dict[str, object], choices: dict[str, list[str]]) -> None:
        """Replace the editors by ones for ``defaults`` (option name -> default value) and
        ``choices`` (option name -> allowed values)."""
        while self._form.rowCount():
            self._form.removeRow(0)
        self._editors = {}
        for name, default in defaults.items():
            editor = _editor(default, choices.get(name))
            if editor is not None:
                editor.setToolTip(HELP.get(name, ""))
                self._form.addRow(_label(name), editor)
                self._editors[name] = editor
        self.setVisible(bool(self._editors))

    def values(self) -> dict[str, object]:
        """The options as edited, by name."""
        return {name: _value(editor) for name, editor in self._editors.items()}


def _editor(default, choices: list[str] | None) -> QWidget | None:
    if choices:
        box = QComboBox()
        box.addItems(choices)
        if default in choices:
            box.setCurrentText(default)
        return box
    if isinstance(default, bool):
        box = QCheckBox()
        box.setChecked(default)
        return box
    if isinstance(default, int):
        box = QSpinBox()
        box.setRange(0, 100_000)
        box.setValue(default)
        return box
    if isinstance(default, float):
        box = QDoubleSpinBox()
        box.setDecimals(3)
        box.setRange(-1e6, 1e6)
        box.setValue(default)
        return box
    return None


def _value(editor: QWidget):
    if isinstance(editor, QComboBox):
        return editor.currentText()
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    return editor.value()
