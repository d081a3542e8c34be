"""The plugin's one threading pattern in a real viewer: a `ThreadJob` reported by a `JobRunner`
on the main thread, errors as notifications, napari's window closing stops the work."""

import threading
import time

import pytest
from qtpy.QtWidgets import QWidget

from vstain.errors import VstainError
from vstain.napari.job_runner import JobRunner
from vstain.napari.model_cache import MODELS
from vstain.napari.thread_job import Call, ThreadJob

pytestmark = pytest.mark.gui


class Counting(ThreadJob):
    """Counts until cancelled (or ``limit``), checking its cancel token every 10 ms."""

    def __init__(self, limit: int = 10**9):
        super().__init__()
        self.count, self.limit = 0, limit
        self.cancel_asked: float | None = None

    def cancel(self) -> None:
        self.cancel_asked = time.perf_counter()
        super().cancel()

    def work(self):
        while not self.cancelled and self.count < self.limit:
            self.count += 1
            time.sleep(0.01)
        self.ended = time.perf_counter()
        return self.count


@pytest.fixture
def docked(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = QWidget()
    viewer.window.add_dock_widget(widget, name="jobs")
    return viewer, widget, JobRunner(widget, interval_ms=20)


def test_ticks_then_done_on_the_main_thread_with_the_result(docked, qtbot):
    _, _, runner = docked
    seen = []

    def tick(job):
        seen.append(("tick", job.count, threading.current_thread() is threading.main_thread()))

    runner.run(Counting(limit=30), tick=tick, done=lambda job: seen.append(("done", job.result)))
    assert runner.busy
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert seen[-1] == ("done", 30)
    ticks = [s for s in seen if s[0] == "tick"]
    assert ticks and all(on_main for _, _, on_main in ticks)
    assert ticks[-1][1] == 30  # the last tick sees everything the job did
    with pytest.raises(RuntimeError):  # one job at a time
        runner.run(Counting())
        runner.run(Counting())
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)


def test_errors_of_the_job_and_of_done_are_notifications(docked, qtbot, notes):
    _, _, runner = docked
    done = []

    def fail():
        raise VstainError("the checkpoint is broken: load another one")

    runner.run(Call(fail), done=done.append)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert notes == [("error", "the checkpoint is broken: load another one")]
    assert isinstance(done[0].error, VstainError) and done[0].result is None

    def show_result(job):
        raise VstainError(f"cannot show {job.result}")

    runner.run(Call(lambda: 7), done=show_result)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert notes[-1] == ("error", "cannot show 7")


def test_cancel_stops_the_job_and_done_follows(docked, qtbot):
    _, _, runner = docked
    done = []
    runner.run(Counting(), done=done.append)
    qtbot.waitUntil(lambda: runner.job.count >= 3, timeout=10_000)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=1_000)
    assert done[0].cancelled and done[0].error is None and done[0].result >= 3


def test_closing_napari_stops_the_job_within_a_second_and_frees_the_models(
    docked, qtbot, checkpoint
):
    viewer, _, runner = docked
    loaded = MODELS.get(checkpoint, "cpu")
    closed, done = [], []
    runner.closed.connect(lambda: closed.append(True))
    job = Counting()
    runner.run(job, done=done.append)
    qtbot.waitUntil(lambda: job.count >= 3, timeout=10_000)
    viewer.close()
    assert job.finished and job.cancelled  # close waited for the job, which stopped on cancel
    # within a second of being asked; napari's own closing work (seconds on a loaded machine)
    # is not the job's latency
    assert job.ended - job.cancel_asked < 1.0
    assert closed == [True] and not runner.busy and done == []
    assert MODELS.get(checkpoint, "cpu") is not loaded  # the plugin's models were freed


def test_closing_napari_does_not_wait_for_a_call(docked, qtbot):
    viewer, _, runner = docked
    release = threading.Event()
    job = Call(release.wait)  # a call that nothing can stop, such as a registration
    runner.run(job)
    viewer.close()
    assert not runner.busy and not job.finished  # left to end on its own: it writes nothing
    release.set()
    assert job.wait(5) and job.result is True
