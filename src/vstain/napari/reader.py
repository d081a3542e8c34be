"""npe2 reader: any slide `open_slide` reads, as a multiscale RGB image layer."""

from __future__ import annotations

from vstain.errors import VstainError
from vstain.io.slide_set import looks_like_slide


def get_reader(path):
    """Return a reader for a single slide path, or None (fast) for paths vstain does not read."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    return read_slide if looks_like_slide(path) else None


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
