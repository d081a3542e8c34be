"""npe2 reader: any slide `open_slide` reads, as a multiscale RGB image layer."""

from __future__ import annotations

from pathlib import Path

from vstain.errors import VstainError

#: tifffile, zarr and plain images, then the formats only OpenSlide reads (docs/io.md).
SUFFIXES = (
    *(".svs", ".tif", ".tiff", ".zarr", ".png", ".jpg", ".jpeg"),
    *(".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".dcm", ".svslide", ".czi"),
)


def _looks_like_slide(path: Path) -> bool:
    if path.suffix.lower() in SUFFIXES:
        return True
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zattrs").exists())


def get_reader(path):
    """Return a reader for a single slide path, or None (fast) for paths vstain does not read."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    return read_slide if _looks_like_slide(Path(path)) else None


def read_slide(path) -> list[tuple]:
    """Open the slide; a broken slide becomes a notification, never a traceback dialog."""
    from napari.utils.notifications import show_error

    from vstain.io import open_slide
    from vstain.napari.layers import slide_layer_data

    path = path[0] if isinstance(path, list | tuple) else path
    try:
        return [slide_layer_data(open_slide(path))]
    except VstainError as e:
        show_error(str(e))
        return [(None,)]
