"""Where a run writes: the output's kind, its staging store, and what --overwrite may replace.

vstain only ever replaces what it wrote itself (an output store, or an OME-TIFF whose Software
tag names vstain), and never a slide it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vstain.errors import OutputExistsError, VstainError
from vstain.io.ome_tiff import written_by_vstain
from vstain.io.ome_zarr import is_output_store

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"


@dataclass(frozen=True)
class Destination:
    """``out`` as asked; ``store`` the zarr store the tile engine writes (``out`` itself, or the
    staging store ``out + ".zarr"`` of an OME-TIFF output)."""

    out: Path
    store: Path
    ome_tiff: bool


def destination(out) -> Destination:
    """The destination of output path ``out``: ``.zarr`` (OME-Zarr) or ``.tif`` / ``.tiff``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return Destination(out, out.with_name(out.name + ZARR_SUFFIX), True)
    if suffix == ZARR_SUFFIX:
        return Destination(out, out, False)
    raise VstainError(
        f"Cannot write {out.name}: outputs are OME-Zarr stores (name ending in .zarr) or "
        "pyramidal OME-TIFF (ending in .ome.tif). Change the output name."
    )


def check_destination(dest: Destination, source, *, resume: bool, overwrite: bool) -> None:
    """Refuse a destination that is (or holds, or lies in) the slide being read, and existing
    outputs that --overwrite would have to delete but vstain did not write."""
    source = Path(source).resolve()
    for path in {dest.out, dest.store}:
        target = path.resolve()
        if target == source or source.is_relative_to(target) or target.is_relative_to(source):
            raise VstainError(
                f"The output {path} is the slide being read ({source}) or lies inside it; "
                "choose an output path elsewhere."
            )
    if dest.store.exists() and not is_output_store(dest.store) and (overwrite or resume):
        raise OutputExistsError(
            f"{dest.store} exists and is not a vstain output store; vstain only replaces or "
            "resumes its own outputs. Choose another output path."
        )
    if dest.ome_tiff and dest.out.exists() and overwrite and not written_by_vstain(dest.out):
        raise OutputExistsError(
            f"{dest.out} exists and was not written by vstain; --overwrite only replaces "
            "vstain's own outputs. Choose another output path."
        )
