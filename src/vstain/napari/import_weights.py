"""The model picker's "Import public weights...": a public ``*_net_G.pth`` (pix2pix, CycleGAN,
CUT, ASP, BCI) becomes a vstain checkpoint, imported on a job thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils import notifications
from qtpy.QtWidgets import QFileDialog, QWidget

from vstain.models.importers import import_checkpoint
from vstain.napari.job_runner import JobRunner
from vstain.napari.thread_job import Call

IMPORT_WEIGHTS = "Import public weights..."


def ask_import(parent: QWidget) -> tuple[Path, Path] | None:
    """Ask for a generator ``.pth`` and where to save its checkpoint; None when cancelled."""
    pth, _ = QFileDialog.getOpenFileName(
        parent, "Public generator weights (*_net_G.pth)", "", "PyTorch state dicts (*.pth *.pt)"
    )
    if not pth:
        return None
    out, _ = QFileDialog.getSaveFileName(
        parent,
        "Save as a vstain checkpoint",
        str(Path(pth).with_suffix(".safetensors")),
        "vstain checkpoints (*.safetensors)",
    )
    return (Path(pth), Path(out)) if out else None


def run_import(
    runner: JobRunner, pth: Path, out: Path, on_imported: Callable[[Path], object]
) -> None:
    """Import ``pth`` into ``out`` on ``runner``; then say what was imported and call
    ``on_imported(out)`` on the main thread (an error is a notification)."""

    def imported(job: Call) -> None:
        if job.error is not None:
            return
        card = job.result.card
        notifications.show_info(
            f"Imported {pth.name} ({card.provenance['layout']}) as {card.architecture}. "
            "Its card states no marker or pixel size (full resolution is used); "
            "`vstain import --marker M --pixel-size UM` records them."
        )
        on_imported(out)

    if runner.busy:
        notifications.show_warning("An import is still running; wait for it.")
        return
    runner.run(Call(lambda: import_checkpoint(pth, out)), done=imported)
