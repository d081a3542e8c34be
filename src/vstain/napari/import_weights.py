"""The model picker's "Import public weights...": a public ``*_net_G.pth`` (pix2pix, CycleGAN,
CUT, ASP, BCI) becomes a vstain checkpoint, imported on a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import notifications
from qtpy.QtWidgets import QFileDialog, QWidget

from vstain.models.importers import import_checkpoint

IMPORT_WEIGHTS = "Import public weights..."


def ask_import(
    parent: QWidget,
    on_imported: Callable[[Path], None],
    on_error: Callable[[BaseException], None],
) -> FunctionWorker | None:
    """Ask for a generator ``.pth`` and where to save the checkpoint, then import in the
    background: ``on_imported(checkpoint)`` or ``on_error(error)`` run on the main thread.
    None when a dialog was cancelled."""
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
    if not out:
        return None

    def imported(model) -> None:
        card = model.card
        notifications.show_info(
            f"Imported {Path(pth).name} ({card.provenance['layout']}) as {card.architecture}. "
            "Its card states no marker or pixel size (full resolution is used); "
            "`vstain import --marker M --pixel-size UM` records them."
        )
        on_imported(Path(out))

    return create_worker(  # errors go to on_error only (not re-raised in the event loop)
        import_checkpoint,
        Path(pth),
        Path(out),
        _connect={"returned": imported, "errored": on_error},
    )
