"""Editors for a model's predict options (sampler steps, n_samples, ...), built by magicgui from
the options' defaults."""

from __future__ import annotations

from magicgui.widgets import Container, Widget, create_widget
from qtpy.QtWidgets import QVBoxLayout, QWidget

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


#: Editor settings by the type of an option's default (bool before int: a bool is an int).
RANGES = {bool: {}, int: {"min": 0, "max": 100_000}, float: {"min": -1e6, "max": 1e6, "step": 1e-3}}


def editor(name: str, default, choices: list[str] | None) -> Widget | None:
    """magicgui's editor for an option: a list for options with choices, else one for the type of
    its default (a check box, a spin box); None for an option without a usable default."""
    if choices:
        value, options = (default if default in choices else choices[0]), {"choices": choices}
    else:
        kind = next((t for t in RANGES if isinstance(default, t)), None)
        if kind is None:
            return None
        value, options = default, RANGES[kind]
    widget = create_widget(
        value, name=name, label=name.replace("_", " ").capitalize(), options=options
    )
    widget.tooltip = HELP.get(name, "")
    return widget


class OptionsPanel(QWidget):
    """A form with one editor per option (see `editor`); options without a usable default are
    left to the model. ``form`` is the magicgui container of the editors, by option name."""

    def __init__(self):
        super().__init__()
        self.form = Container(labels=True)
        self.form.margins = (0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form.native)

    def set_options(self, defaults: dict[str, object], choices: dict[str, list[str]]) -> None:
        """Replace the editors by ones for ``defaults`` (option name -> default value) and
        ``choices`` (option name -> allowed values)."""
        self.form.clear()
        for name, default in defaults.items():
            widget = editor(name, default, choices.get(name))
            if widget is not None:
                self.form.append(widget)
        self.setVisible(len(self.form) > 0)

    def values(self) -> dict[str, object]:
        """The options as edited, by name."""
        return self.form.asdict()
