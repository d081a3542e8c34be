"""The text label of the plugin's panels."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QSizePolicy


def wrapping_label(text: str = "") -> QLabel:
    """A label that wraps its text to the panel's width instead of widening the panel."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label
