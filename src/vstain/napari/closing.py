"""Dock widgets that stop their background work when the napari window closes."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject


class ShutdownOnClose:
    """Mixin for a QWidget with a ``shutdown()``: call ``watch_close()`` once work starts, and
    closing the window that holds the widget (napari quitting) calls ``shutdown()``."""

    _watching_close = False

    def watch_close(self) -> None:
        if not self._watching_close:
            self.window().installEventFilter(self)
            self._watching_close = True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self.shutdown()
        return False
