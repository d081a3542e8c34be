"""Slides in and out: every supported format as a lazy `Slide`; OME-Zarr and OME-TIFF writers."""

from vstain.io.ome_tiff import write_ome_tiff
from vstain.io.ome_zarr import create_ome_zarr, open_ome_zarr_levels, write_ome_zarr
from vstain.io.pyramid import downsample_2x
from vstain.io.readers import open_slide
from vstain.io.slide import Slide

__all__ = [
    "Slide",
    "create_ome_zarr",
    "downsample_2x",
    "open_ome_zarr_levels",
    "open_slide",
    "write_ome_tiff",
    "write_ome_zarr",
]
