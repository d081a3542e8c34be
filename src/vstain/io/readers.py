"""`open_slide`: any supported slide file as a lazy multiscale `Slide`.

The format is recognised from the file's first bytes (TIFF, PNG, JPEG) or, for a folder, taken
to be zarr (or, holding ``.dcm`` files, a DICOM WSI series); anything else is offered to
OpenSlide (MIRAX, VMS / VMU, DICOM, ...). TIFF files are read by tifffile, except the vendor
TIFFs it gets wrong (`OPENSLIDE_TIFF_VENDORS`) and files it cannot parse, which OpenSlide reads.
Slides whose coarsest level is still larger than 4096 px get lazily computed levels down to at
most 512 px (see `vstain.io.pyramid`), so viewers always get a pyramid.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vstain.errors import SlideError
from vstain.io.openslide_reader import open_openslide, openslide_vendor
from vstain.io.plain_reader import open_plain
from vstain.io.pyramid import extend_lazy_pyramid
from vstain.io.slide import Slide
from vstain.io.tiff_reader import TiffUnreadableError, open_tiff
from vstain.io.zarr_reader import open_zarr

MAGIC = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
}
SUPPORTED = (
    "SVS / pyramidal TIFF / OME-TIFF / TIFF, OME-Zarr, PNG, JPEG, and through OpenSlide MIRAX, "
    "Hamamatsu VMS / VMU / NDPI, Leica SCN, Ventana BIF, Philips TIFF, DICOM WSI"
)
BACKENDS = ("auto", "tifffile", "openslide")
#: Files that make a folder a zarr store (v3, v2 array, v2 group).
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
#: OpenSlide vendors of TIFF files that tifffile reads wrongly: Leica SCN (the first image may be
#: the macro overview), Philips TIFF (missing tiles would be black, not glass) and Ventana BIF
#: (overlapping tiles need OpenSlide's stitching).
OPENSLIDE_TIFF_VENDORS = ("leica", "philips", "ventana")


def open_slide(path: str | os.PathLike, backend: str = "auto") -> Slide:
    """Open a slide lazily: levels are (Y, X, 3) uint8 dask arrays, full resolution first.

    ``backend``: ``"auto"`` (see the module docstring), ``"tifffile"`` (TIFF files only) or
    ``"openslide"`` (any file OpenSlide reads). ``metadata["backend"]`` names the one used and,
    when OpenSlide stands in for tifffile, ``metadata["backend_note"]`` says why.

    Raises `SlideError` (naming the file and what to do) for missing, unsupported, corrupt,
    truncated, empty or non-RGB files.
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise SlideError(f"Unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if not path.exists():
        raise SlideError(f"{path} does not exist. Check the path (and that its drive is mounted).")
    slide, used, note = _open_with_backend(path, backend)
    empty = [k for k, level in enumerate(slide.levels) if 0 in level.shape]
    if empty:
        raise SlideError(f"{path} has no pixels (level {empty[0]} is empty). It is not a slide.")
    levels = extend_lazy_pyramid(slide.levels)
    metadata = {
        **slide.metadata,
        "backend": used,
        **({"backend_note": note} if note else {}),
        "computed_levels": len(levels) - len(slide.levels),
    }
    return dataclasses.replace(slide, levels=levels, metadata=metadata)


def _open_with_backend(path: Path, backend: str) -> tuple[Slide, str, str | None]:
    """The slide, the backend that read it, and why OpenSlide stood in for tifffile (or None)."""
    dicom = dicom_series_file(path) if path.is_dir() and backend != "tifffile" else None
    if dicom is not None:
        return open_openslide(dicom), "openslide", None
    if backend == "openslide":
        return open_openslide(path), "openslide", None
    kind = detect_format(path)
    if backend == "tifffile" and kind != "tiff":
        raise SlideError(
            f"{path} is not a TIFF file, so the tifffile backend cannot read it. Use "
            "backend='auto'."
        )
    if kind == "openslide":
        return open_openslide(path), "openslide", None
    if kind == "zarr":
        return open_zarr(path), "zarr", None
    if kind != "tiff":
        return open_plain(path, kind), "imagecodecs", None
    vendor = openslide_vendor(path) if backend == "auto" else None
    if vendor in OPENSLIDE_TIFF_VENDORS:
        note = f"{vendor} TIFF: tifffile does not read this vendor's layout correctly"
        return open_openslide(path), "openslide", note
    try:
        return open_tiff(path), "tifffile", None
    except TiffUnreadableError as e:
        if vendor is None:
            raise
        return open_openslide(path), "openslide", f"tifffile cannot parse it: {e}"


def dicom_series_file(folder: Path) -> Path | None:
    """The first ``.dcm`` file of a folder that is not a zarr store (a DICOM WSI series, which
    OpenSlide opens from any of its files), or None."""
    if any((folder / name).exists() for name in ZARR_MARKERS):
        return None
    return next(iter(sorted(folder.glob("*.dcm"))), None)


def detect_format(path: Path) -> str:
    """The format of ``path``: tiff, png or jpeg from its first bytes; zarr for a folder;
    ``"openslide"`` for other files OpenSlide recognises."""
    if path.is_dir():
        return "zarr"
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise SlideError(f"{path} is empty (0 bytes). Copy or export the slide again.")
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    if openslide_vendor(path) is not None:
        return "openslide"
    raise SlideError(
        f"{path} is not a slide format vstain reads ({SUPPORTED}). Convert it, e.g. to OME-TIFF "
        "with bfconvert or QuPath."
    )
