"""Work on its own thread: the one kind of background job of the plugin's widgets.

Nothing here touches napari or Qt. A `JobRunner` (napari/job_runner.py) starts a job and reports
it on the main thread; the job only runs, keeps what it returns or raises, and stops at its
cancel token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vstain.tiles import CancelToken


class ThreadJob:
    """``work()`` on its own thread, with a cancel token. What it returns is kept in ``result``,
    what it raises in ``error``; both are read from any thread once ``finished``.
    ``stops_on_cancel``: ``work()`` checks the token (closing napari waits for it to stop)."""

    name = "vstain-job"
    stops_on_cancel = True

    def __init__(self):
        self.cancel_token = CancelToken()
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)

    def start(self):
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def stop(self, timeout: float) -> None:
        """Cancel and wait at most ``timeout`` s for the job to reach its cancel check (closing
        napari); a job that does not check its token is left to end on its own."""
        self.cancel()
        if self.stops_on_cancel:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def _run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as e:  # reported on the main thread by the runner
            self.error = e

    def work(self):
        raise NotImplementedError


class Call(ThreadJob):
    """A job that returns ``fn()``: one call that writes nothing, so it is not waited for when
    napari closes (nothing checks the cancel token in between)."""

    name = "vstain-call"
    stops_on_cancel = False

    def __init__(self, fn: Callable[[], object]):
        super().__init__()
        self.fn = fn

    def work(self):
        return self.fn()
