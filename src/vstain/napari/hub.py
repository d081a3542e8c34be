"""Signals between the plugin's widgets (connections are weak: a closed widget drops out)."""

from __future__ import annotations

from psygnal import Signal


class Hub:
    """``checkpoint_saved(path)``: a new checkpoint exists (the Stain widget adds it)."""

    checkpoint_saved = Signal(object)


hub = Hub()
