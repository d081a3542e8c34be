"""`open_slide`: any supported slide file as a lazy multiscale `Slide`.

The format is recognised from the file's first bytes (TIFF, PNG, JPEG) or, for a folder, taken
to be zarr. Slides whose coarsest level is still larger than 4096 px get lazily computed levels
down to at most 512 px (see `vstain.io.pyramid`), so viewers always get a pyramid.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vstain.errors import SlideError
from vstain.io.plain_reader import open_plain
from vstain.io.pyramid import extend_lazy_pyramid
from vstain.io.slide import Slide
from vstain.io.tiff_reader import open_tiff
from vstain.io.zarr_reader import open_zarr

MAGIC = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
}
SUPPORTED = "SVS / pyramidal TIFF / OME-TIFF / TIFF, OME-Zarr, PNG, JPEG"


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a slide lazily: levels are (Y, X, 3) uint8 dask arrays, full resolution first.

    Raises `SlideError` (naming the file and what to do) for missing, unsupported, corrupt,
    truncated, empty or non-RGB files.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path} does not exist. Check the path (and that its drive is mounted).")
    kind = detect_format(path)
    if kind == "zarr":
        slide = open_zarr(path)
    elif kind == "tiff":
        slide = open_tiff(path)
    else:
        slide = open_plain(path, kind)
    empty = [k for k, level in enumerate(slide.levels) if 0 in level.shape]
    if empty:
        raise SlideError(f"{path} has no pixels (level {empty[0]} is empty). It is not a slide.")
    levels = extend_lazy_pyramid(slide.levels)
    metadata = {**slide.metadata, "computed_levels": len(levels) - len(slide.levels)}
    return dataclasses.replace(slide, levels=levels, metadata=metadata)


def detect_format(path: Path) -> str:
    """The format of ``path``: tiff, png or jpeg from its first bytes; zarr for a folder."""
    if path.is_dir():
        return "zarr"
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise SlideError(f"{path} is empty (0 bytes). Copy or export the slide again.")
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    raise SlideError(
        f"{path} is not a slide format vstain reads ({SUPPORTED}). Convert it, e.g. to OME-TIFF "
        "with bfconvert or QuPath."
    )
