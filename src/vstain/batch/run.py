"""`stain_slides`: a cohort on dask.distributed, on a LocalCluster or an existing scheduler."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vstain.batch.plan import (
    SlidePlan,
    check_block,
    check_outputs,
    interleave,
    output_path,
    plan_slide,
)
from vstain.batch.summary import BatchSummary, SlideReport, write_summary
from vstain.batch.worker import ModelPlugin, finish_slide, run_block
from vstain.errors import VstainError
from vstain.pipeline import check_request, load_model
from vstain.tiles import CancelToken
from vstain.tiles.store import DONE_BLOCK

SUMMARY_NAME = "batch-summary.json"


@dataclass(frozen=True)
class BatchProgress:
    """Reported once the blocks are submitted, then after every finished (or failed) block."""

    done: int
    total: int
    dashboard: str | None


def default_workers() -> int:
    """One worker per visible GPU, else one."""
    import torch

    return torch.cuda.device_count() or 1


@contextmanager
def connect(scheduler: str | None, workers: int | None, torch_threads: int | None):
    """(client, torch threads per worker): an existing scheduler's, or a new LocalCluster of
    ``workers`` single-threaded worker processes sharing this machine's cores."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise VstainError(
                f"Cannot reach the dask scheduler at {scheduler} ({e}). Check the address "
                "(e.g. tcp://host:8786) and that the scheduler is running."
            ) from e
        with client:
            yield client, torch_threads
        return
    n = workers or default_workers()
    threads = torch_threads or max(1, (os.cpu_count() or 1) // n)
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,  # a failed block is one line in the summary, not a log
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, threads


def dashboard_link(client) -> str | None:
    """The dask dashboard's address, or None when the scheduler serves none (no bokeh)."""
    services = client.scheduler_info().get("services", {})
    return client.dashboard_link if "dashboard" in services else None


def plan_cohort(
    sources: list[Path], outs: list[Path], model, **options
) -> tuple[list[SlideReport], dict[int, SlidePlan]]:
    """Plan every slide; a slide that cannot be opened is reported failed, the rest go on."""
    reports, plans = [], {}
    for i, (source, out) in enumerate(zip(sources, outs, strict=True)):
        report = SlideReport(str(source), str(out))
        reports.append(report)
        try:
            plan = plan_slide(i, source, model, out, **options)
        except Exception as e:  # a corrupt or unreadable slide must not stop the cohort
            report.fail(failure_message(e))
            continue
        plans[i] = plan
        report.tiles, report.already_done, report.blocks = (
            plan.tiles,
            plan.already_done,
            len(plan.blocks),
        )
        if plan.finished:
            report.status = "done"
    return reports, plans


def stain_slides(
    slides,
    model,
    out_dir,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    tile: int | None = None,
    block: int = DONE_BLOCK,
    batch_size: int = 4,
    torch_threads: int | None = None,
    predict_options: dict | None = None,
    ome_tiff: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    summary_path=None,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: CancelToken | None = None,
) -> BatchSummary:
    """Stain ``slides`` with ``model`` (checkpoint path or shipped name) into ``out_dir``.

    Each slide goes to ``DIR/<name>.zarr`` (or ``.ome.tif``), written by blocks of ``block`` x
    ``block`` tiles spread over the workers of ``scheduler`` (an address) or of a new
    LocalCluster of ``workers`` processes. ``resume`` re-runs only unfinished blocks. A slide
    that fails is reported in the summary (also written as JSON to ``summary_path``, default
    ``DIR/batch-summary.json``) and the others go on. ``predict_options`` go to the model's
    ``predict`` on every worker and into each store's settings (a resume must use the same).
    """
    check_block(block)
    if scheduler is not None and workers is not None:
        raise VstainError("Give a scheduler address or a number of workers, not both.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [Path(s) for s in slides]
    outs = [output_path(s, out_dir, ome_tiff) for s in sources]
    check_outputs(outs, resume, overwrite)
    # a bad checkpoint, tile or option fails here, once, before any slide or worker
    loaded = load_model(model, "cpu")
    tile, batch_size, predict_options = check_request(
        loaded, tile=tile, batch_size=batch_size, options=predict_options
    )
    options = {"tile": tile, "block": block, "resume": resume, "overwrite": overwrite}
    options["predict_options"] = predict_options
    reports, plans = plan_cohort(sources, outs, loaded, **options)
    summary = BatchSummary(reports)
    start = time.perf_counter()
    try:
        if any(not p.finished for p in plans.values()):
            with connect(scheduler, workers, torch_threads) as (client, threads):
                name = f"vstain-model-{loaded.sha256[:12]}-{device}"
                plugin = ModelPlugin(str(loaded.checkpoint), device, threads, predict_options)
                client.register_plugin(plugin, name=name)
                summary.workers = len(client.scheduler_info()["workers"])
                summary.dashboard = dashboard_link(client)
                try:
                    execute(client, name, plans, summary, batch_size, progress, cancel)
                finally:
                    client.unregister_worker_plugin(name)
    finally:
        for plan in plans.values():
            if plan.lock is not None:
                plan.lock.release()
    summary.seconds = time.perf_counter() - start
    write_summary(summary, summary_path or out_dir / SUMMARY_NAME)
    return summary


def execute(client, plugin, plans, summary, batch_size, progress, cancel) -> None:
    """Submit every block (interleaved over slides), finish each slide once its blocks are done,
    and fill ``summary`` as results arrive."""
    run = _Run(client, plans, summary)
    blocks = interleave([plans[i] for i in sorted(plans)])
    for n, b in enumerate(blocks):
        run.submit(("block", b.slide), run_block, plugin, plans[b.slide].job, b, batch_size, n=n)
    for i in [i for i, left in run.remaining.items() if left == 0]:
        run.finish(i)
    if progress:
        progress(BatchProgress(0, len(blocks), summary.dashboard))
    for future in run.pending:
        kind = run.record(future)
        if kind == "block" and progress:
            progress(BatchProgress(run.blocks_done, len(blocks), summary.dashboard))
        if cancel is not None and cancel.cancelled:
            break
    if run.futures:
        client.cancel(list(run.futures))
        summary.cancelled = True


def failure_message(error: BaseException) -> str:
    """One line for a slide's failure: a `VstainError`'s own message, else the error's type too."""
    if isinstance(error, VstainError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class _Run:
    """The futures of one run and what each stands for: ("block" | "finish", slide index)."""

    def __init__(self, client, plans: dict[int, SlidePlan], summary: BatchSummary):
        from distributed import as_completed

        self.client, self.plans, self.summary = client, plans, summary
        self.token = uuid.uuid4().hex[:8]
        self.futures: dict = {}
        self.pending = as_completed()
        self.remaining = {i: len(p.blocks) for i, p in plans.items() if not p.finished}
        self.blocks_done = 0

    def submit(self, tag: tuple[str, int], fn, *args, n: int = 0) -> None:
        """Submit ``fn(*args)``; blocks run in submission order, finishes before them."""
        key = f"vstain-{tag[0]}-{self.token}-{tag[1]}-{n}"
        priority = 1 if tag[0] == "finish" else -n
        future = self.client.submit(fn, *args, key=key, priority=priority)
        self.futures[future] = tag
        self.pending.add(future)

    def finish(self, i: int) -> None:
        plan = self.plans[i]
        args = (plan.job, str(plan.out), plan.pixel_size, plan.ome_tiff)
        self.submit(("finish", i), finish_slide, *args)

    def record(self, future) -> str:
        """Count a finished future in its slide's report; submit the slide's finish after its
        last block. Returns the future's kind."""
        kind, i = self.futures.pop(future)
        report = self.summary.slides[i]
        if future.status == "error":
            report.fail(failure_message(future.exception()))
            report.blocks_failed += kind == "block"
        elif kind == "block":
            report.add_block(future.result())
        else:
            report.worker_seconds += future.result()
            report.status = "done"
        if kind == "block":
            self.blocks_done += 1
            self.remaining[i] -= 1
            if self.remaining[i] == 0 and report.status != "failed":
                self.finish(i)
        return kind
