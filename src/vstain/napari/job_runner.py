"""The one Qt side of the plugin's background work: a widget's `JobRunner` starts a `ThreadJob`,
reports it on the main thread and stops it when napari closes."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QWidget

from vstain.napari.model_cache import MODELS, WORKER
from vstain.napari.notify import notify_error
from vstain.napari.thread_job import ThreadJob

#: Closing napari waits at most this long for a running job to reach its cancel check (a job may
#: wait less: `StainJob.stop`).
CLOSE_WAIT_S = 30.0

Report = Callable[[ThreadJob], None]


class JobRunner(QObject):
    """Runs a widget's jobs one at a time. While a job runs, ``tick(job)`` is called every
    ``interval_ms`` on the main thread (progress); once it ends, its error becomes a notification
    and ``done(job)`` is called (result). An error raised by ``tick`` or ``done`` is a
    notification too. Closing the window that holds the widget cancels the job, waits for it,
    frees the plugin's models and emits ``closed``; ``done`` is not called then."""

    closed = Signal()

    def __init__(self, widget: QWidget, interval_ms: int = 100):
        super().__init__(widget)
        self._widget = widget
        self._window = lambda: None  # a weak reference: the runner must not keep napari alive
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._poll)
        self.job: ThreadJob | None = None
        self._tick: Report | None = None
        self._done: Report | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def run(self, job: ThreadJob, tick: Report | None = None, done: Report | None = None) -> None:
        """Start ``job`` (the runner must not be busy)."""
        if self.job is not None:
            raise RuntimeError("a job is running: wait for it or cancel it first")
        self._watch_window()
        self._tick, self._done = tick, done
        self.job = job.start()
        self._timer.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next cancel check (``done`` follows)."""
        if self.job is not None:
            self.job.cancel()

    def shutdown(self) -> None:
        """Stop the running job (`ThreadJob.stop`: at most CLOSE_WAIT_S), free the plugin's
        models (GPU memory included) and its staining process, emit ``closed``."""
        self._timer.stop()
        job, self.job = self.job, None
        if job is not None:
            job.stop(CLOSE_WAIT_S)
        MODELS.clear()
        WORKER.stop(kill=False)
        self.closed.emit()

    def _poll(self) -> None:
        job = self.job
        if job is None:
            self._timer.stop()
            return
        finished = job.finished  # read first, so the last tick sees everything the job did
        self._report(self._tick, job)
        if finished and job is self.job:
            self._timer.stop()
            self.job = None
            if job.error is not None:
                notify_error(job.error)
            self._report(self._done, job)

    @staticmethod
    def _report(report: Report | None, job: ThreadJob) -> None:
        if report is None:
            return
        try:
            report(job)
        except Exception as e:  # a slot that fails shows a notification, napari keeps running
            notify_error(e)

    def _watch_window(self) -> None:
        """Watch the window that holds the widget now (a docked widget: napari's window)."""
        window, watched = self._widget.window(), self._window()
        if window is not watched:
            if watched is not None:
                watched.removeEventFilter(self)
            window.installEventFilter(self)
            self._window = weakref.ref(window)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self.shutdown()
        return False
